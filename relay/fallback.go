package relay

import (
	"context"
	"slices"

	"github.com/qmgate/qmgate/relay/transport"
)

// Fallback sends an mx route's mail through another route (a smarthost)
// after After failed attempts of a message, or at once after a failure On
// names (transport.FailureConnectTimeout: port 25 filtered; or
// transport.FailureConnect: no exchanger took a connection).
type Fallback struct {
	Route string // the name of the route that takes over
	After int
	On    []string
}

// now reports whether r is a failure that falls back at once.
func (f *Fallback) now(r transport.Result) bool {
	if r.Failure == "" {
		return false
	}
	return slices.Contains(f.On, r.Failure) ||
		r.Failure == transport.FailureConnectTimeout && slices.Contains(f.On, transport.FailureConnect)
}

// byName returns the route called name, or nil.
func (r *Router) byName(name string) *Route {
	for _, rt := range r.Routes {
		if rt.Name == name {
			return rt
		}
	}
	return nil
}

// fallBack hands the recipients of p whose results call for the route's
// fallback at once to the fallback route, as a part of their own, and
// returns what is left of p with its results; with nothing to hand over it
// returns p and results unchanged.
func (e *Engine) fallBack(ctx context.Context, rt *Route, p *part, results []transport.Result) (*part, []transport.Result) {
	fb := e.Routes().byName(rt.Fallback.Route)
	if fb == nil || fb == rt {
		return p, results
	}
	var moved, kept []int
	var keptResults []transport.Result
	for k, i := range p.idx {
		if k < len(results) && rt.Fallback.now(results[k]) {
			moved = append(moved, i)
			continue
		}
		kept = append(kept, i)
		if k < len(results) {
			keptResults = append(keptResults, results[k])
		}
	}
	if len(moved) == 0 {
		return p, results
	}
	e.Log.Info("mail exchangers unreachable, falling back", "id", p.c.d.ID, "route", rt.Name,
		"fallback", fb.Name, "failure", results[0].Failure, "recipients", len(moved))
	p.c.mu.Lock()
	p.c.left++
	p.c.mu.Unlock()
	if e.worker(ctx, fb).push(&part{c: p.c, idx: moved}) {
		e.releaseSlot(p.c)
	}
	if keptResults == nil {
		keptResults = []transport.Result{}
	}
	return &part{c: p.c, idx: kept}, keptResults
}
