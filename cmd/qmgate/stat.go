package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
)

// routeShape is one line of `queue stat`'s routes table: the pending
// recipients of one destination key (what the queue backs off by), named
// by the configuration's routes.
type routeShape struct {
	// Route names the routes that send to the destination, in table
	// order, as the configuration names them ("-" for mail no route
	// takes any more).
	Route string `json:"route"`
	// NextHop is where they send: the route's hosts in order, separated
	// by commas, "MX:example.com" for an mx route's domain, or "none".
	NextHop     string `json:"next_hop"`
	Destination string `json:"destination"`
	Total       int    `json:"total"`
	Buckets     []int  `json:"buckets"`
}

// statJSON is `queue stat -json`: the queue's counts, plus the routes.
type statJSON struct {
	*queue.Stats
	Routes []routeShape `json:"routes"`
}

// statRoutes is what names the destinations of cfg's queue: its routes,
// or for a nullclient's spool (whose mail all goes to the QMQP servers,
// kept by recipient domain) a route "nullclient" through those servers.
func statRoutes(cfg *config.Config) []config.Route {
	if cfg.Nullclient.SpoolDir != "" && cfg.QueueDir == cfg.Nullclient.SpoolDir {
		hosts := make([]string, len(cfg.Nullclient.QMQPServers))
		for i, h := range cfg.Nullclient.QMQPServers {
			hosts[i] = "qmqp://" + h
		}
		return []config.Route{{Name: "nullclient", Domains: []string{"*"}, Via: "nullclient", Hosts: hosts}}
	}
	return cfg.Routes
}

// routeShapes names each destination of st by routes. The queue keys a
// recipient's retries by its route's first next hop, or "mx:" and its
// domain for an mx route (relay's destinationOf); several routes that
// share a next hop share a line.
func routeShapes(st *queue.Stats, routes []config.Route) []routeShape {
	out := make([]routeShape, 0, len(st.Destinations))
	for _, d := range st.Destinations {
		rs := routeShape{Destination: d.Destination, Total: d.Total, Buckets: d.Buckets}
		var names []string
		if len(routes) == 1 && routes[0].Via == "nullclient" {
			names, rs.NextHop = []string{routes[0].Name}, strings.Join(routes[0].Hosts, ",")
		} else if dom, ok := strings.CutPrefix(d.Destination, "mx:"); ok {
			rs.NextHop = "MX:" + dom
			for i := range routes {
				if routes[i].Via == "mx" && mail.HostList(routes[i].Domains).Match(dom) {
					names = append(names, routes[i].Name)
					break
				}
			}
		} else if d.Destination == "noroute" || d.Destination == "" {
			rs.NextHop = "none"
		} else {
			rs.NextHop = d.Destination
			for i := range routes {
				if routes[i].Via != d.Destination {
					continue
				}
				names = append(names, routes[i].Name)
				if len(routes[i].Hosts) > 1 {
					rs.NextHop = strings.Join(routes[i].Hosts, ",")
				}
			}
		}
		rs.Route = strings.Join(names, ",")
		if rs.Route == "" {
			rs.Route = "-"
		}
		out = append(out, rs)
	}
	return out
}

// writeRoutes renders the routes table of `queue stat`: per route and
// next hop, the pending recipients by message age, as the domain table.
func writeRoutes(w io.Writer, st *queue.Stats, shapes []routeShape) error {
	fmt.Fprintln(w)
	if len(shapes) == 0 {
		_, err := fmt.Fprintln(w, "routes: nothing pending")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(ageColumns(st, "ROUTE", "NEXT-HOP", "T"), "\t"))
	for _, r := range shapes {
		fmt.Fprintln(tw, strings.Join(counts(r.Buckets, mail.OneWord(r.Route), mail.OneWord(r.NextHop), strconv.Itoa(r.Total)), "\t"))
	}
	return tw.Flush()
}

// writeNextHops renders the next hop health of routes with several hosts,
// which only the running daemon knows.
func writeNextHops(w io.Writer, st *queue.Stats, now time.Time) error {
	fmt.Fprintln(w)
	switch {
	case !st.Daemon:
		_, err := fmt.Fprintln(w, "next hops: not known, the daemon is not running (their health is kept by qmgate serve)")
		return err
	case len(st.NextHops) == 0:
		_, err := fmt.Fprintln(w, "next hops: none tried yet by a route with several hosts")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSTATE\tSINCE\tRETRY-IN\tFAILURES\tLAST-ERROR")
	for _, h := range st.NextHops {
		state, retry := "up", "-"
		if !h.Up {
			state = "down"
			if !h.DownUntil.IsZero() {
				retry = formatAge(int64(h.DownUntil.Sub(now) / time.Second))
			}
		}
		since := "-"
		if !h.Since.IsZero() {
			since = stamp(h.Since)
		}
		last := "-"
		if h.LastError != "" {
			last = lineSafe(h.LastError)
			if !h.LastErrorAt.IsZero() {
				last += " (" + stamp(h.LastErrorAt) + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", mail.OneWord(h.Host), state, since, retry, h.Failures, last)
	}
	return tw.Flush()
}
