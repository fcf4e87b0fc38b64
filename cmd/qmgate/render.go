package main

import (
	"encoding/json"
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

// The text renderers below are the stable output of `qmgate queue`: one
// row per message, whitespace-separated columns in a fixed order, with
// every field free of whitespace except the last (LAST-ERROR). Monitoring
// that wants more should use -json, whose field names are stable too.
// mailq's Postfix layout is in mailq.go.

// writeList renders `qmgate queue list` (mailq). Text columns:
//
//	ID AGE SIZE STATE NEXT SENDER NPENDING PENDING LAST-ERROR
//
// AGE and NEXT are durations (45s, 12m, 3h12m, 2d4h); NEXT is "now" when
// due and "-" when nothing is scheduled (held, or all recipients active).
// SENDER is <addr> (<> for bounces); PENDING is <a>,<b>,...; LAST-ERROR is
// "-" when there is none.
func writeList(w io.Writer, rows []queue.Row, asJSON bool) error {
	if asJSON {
		return writeMailqJSON(w, rows)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAGE\tSIZE\tSTATE\tNEXT\tSENDER\tNPENDING\tPENDING\tLAST-ERROR")
	for i := range rows {
		r := &rows[i]
		pend := make([]string, len(r.Pending))
		for j, p := range r.Pending {
			pend[j] = "<" + mail.OneWord(p) + ">"
		}
		pending := strings.Join(pend, ",")
		if pending == "" {
			pending = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t<%s>\t%d\t%s\t%s\n", mail.OneWord(r.ID), formatAge(r.AgeSeconds),
			r.Size, r.State, nextText(r), mail.OneWord(r.Sender), len(r.Pending), pending, lineSafe(r.LastError))
	}
	return tw.Flush()
}

func nextText(r *queue.Row) string {
	switch {
	case r.NextAttempt.IsZero():
		return "-"
	case r.NextInSeconds <= 0:
		return "now"
	}
	return formatAge(r.NextInSeconds)
}

// writeStat renders `qmgate queue stat`: counts, the qshape table of
// pending recipients per domain by message age in minutes, the same per
// route and next hop (named by routes, the configuration's), then the
// health of the next hops of routes with several, from the daemon.
func writeStat(w io.Writer, st *queue.Stats, routes []config.Route, asJSON bool) error {
	shapes := routeShapes(st, routes)
	if asJSON {
		return writeJSON(w, statJSON{Stats: st, Routes: shapes})
	}
	fmt.Fprintf(w, "messages %d  bytes %d  queued %d  deferred %d  active %d  held %d\n",
		st.Messages, st.Bytes, st.Queued, st.Deferred, st.Active, st.Held)
	fmt.Fprintf(w, "recipients  pending %d  delivered %d  failed %d\n",
		st.Recipients.Pending, st.Recipients.Delivered, st.Recipients.Failed)
	if st.OldestID != "" {
		fmt.Fprintf(w, "oldest %s  age %s\n", st.OldestID, formatAge(st.OldestAgeSeconds))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(ageColumns(st, "", "T"), "\t")+"\t")
	for _, d := range append([]queue.DomainShape{st.Total}, st.Domains...) {
		fmt.Fprintln(tw, strings.Join(counts(d.Buckets, mail.OneWord(d.Domain), strconv.Itoa(d.Total)), "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := writeRoutes(w, st, shapes); err != nil {
		return err
	}
	return writeNextHops(w, st, time.Now())
}

// ageColumns is the head of a qshape table: the columns named, then each
// age bucket's minutes, and the last again with "+" (older than that).
func ageColumns(st *queue.Stats, names ...string) []string {
	for _, b := range st.BucketMinutes {
		names = append(names, strconv.Itoa(b))
	}
	if n := len(st.BucketMinutes); n > 0 {
		names = append(names, strconv.Itoa(st.BucketMinutes[n-1])+"+")
	}
	return names
}

// counts is a row of a qshape table: the columns given, then the counts.
func counts(buckets []int, cols ...string) []string {
	for _, c := range buckets {
		cols = append(cols, strconv.Itoa(c))
	}
	return cols
}

// writeDetail renders `qmgate queue show ID`.
func writeDetail(w io.Writer, d *queue.Detail, asJSON bool) error {
	if asJSON {
		return writeJSON(w, d)
	}
	fmt.Fprintf(w, "id          %s\n", d.ID)
	fmt.Fprintf(w, "received    %s (%s ago)\n", stamp(d.Received), formatAge(d.AgeSeconds))
	fmt.Fprintf(w, "size        %d\n", d.Size)
	fmt.Fprintf(w, "sender      <%s>\n", mail.OneLine(d.Sender))
	fmt.Fprintf(w, "state       %s\n", d.State)
	if !d.NextAttempt.IsZero() {
		fmt.Fprintf(w, "next        %s (%s)\n", stamp(d.NextAttempt), nextText(&d.Row))
	}
	if d.DelayNotified {
		fmt.Fprintf(w, "notice      delay notice sent\n")
	}
	fmt.Fprintf(w, "recipients  %d (%d pending)\n", d.Recipients, len(d.Pending))
	for _, r := range d.Recipient {
		fmt.Fprintf(w, "\n<%s>  %s", mail.OneLine(r.Address), r.State)
		if r.Active {
			fmt.Fprint(w, " (being delivered)")
		}
		fmt.Fprintf(w, "  attempts %d  destination %s\n", r.Attempts, mail.OneWord(r.Destination))
		if !r.NextAttempt.IsZero() {
			fmt.Fprintf(w, "  next attempt %s\n", stamp(r.NextAttempt))
		}
		if r.Final != "" {
			b := "bounce pending"
			if r.Bounced {
				b = "bounced"
			}
			fmt.Fprintf(w, "  failed: %s (%s)\n", lineSafe(r.Final), b)
		}
		for _, a := range r.History {
			fmt.Fprintf(w, "  %s  %s  route=%s host=%s tls=%s  %s\n", stamp(a.Time), a.Result,
				orDash(mail.OneWord(a.Route)), orDash(mail.OneWord(a.Host)), orDash(mail.OneWord(a.TLSPolicy)), lineSafe(a.Reply))
		}
	}
	fmt.Fprintln(w, "\nheader:")
	for _, l := range strings.SplitAfter(d.Header, "\n") {
		if l != "" {
			fmt.Fprintf(w, "  %s\n", lineSafe(strings.TrimRight(l, "\r\n")))
		}
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// formatAge renders seconds compactly: 45s, 12m, 3h12m, 2d4h.
func formatAge(sec int64) string {
	if sec < 0 {
		sec = 0
	}
	switch {
	case sec < 60:
		return strconv.FormatInt(sec, 10) + "s"
	case sec < 3600:
		return strconv.FormatInt(sec/60, 10) + "m"
	case sec < 86400:
		h, m := sec/3600, sec%3600/60
		if m == 0 {
			return strconv.FormatInt(h, 10) + "h"
		}
		return fmt.Sprintf("%dh%dm", h, m)
	}
	d, h := sec/86400, sec%86400/3600
	if h == 0 {
		return strconv.FormatInt(d, 10) + "d"
	}
	return fmt.Sprintf("%dd%dh", d, h)
}

// lineSafe makes s one printable line.
func lineSafe(s string) string {
	if s == "" {
		return "-"
	}
	return mail.OneLine(s)
}
