package transport

import (
	"context"
	"sync"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// Reuse says how a transport that keeps connections (QMTP, SMTP) reuses
// them.
type Reuse struct {
	// MaxIdle is how many idle connections are kept; default 1.
	MaxIdle int
	// IdleTimeout is how long an idle connection is kept; default
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
}

// pooled delivers over reused connections of one kind: the Deliver and
// Close of the QMTP and SMTP transports.
type pooled[C pooledConn] struct {
	host string
	pool connPool[C]
	// send delivers jobs over one connection and returns how many it
	// finished; the rest go over another connection.
	send func(ctx context.Context, conn C, jobs []*Job, host string) int
	// dialFailed is every result when no connection can be had.
	dialFailed func(error) mail.Status
}

// Deliver implements Transport.
func (p *pooled[C]) Deliver(ctx context.Context, jobs []*Job) {
	for len(jobs) > 0 {
		conn, err := p.pool.get(ctx)
		if err != nil {
			st := p.dialFailed(err)
			for _, j := range jobs {
				j.SetAll(st, p.host)
				for i := range j.Results {
					j.Results[i].HostDown = true
				}
			}
			return
		}
		done := p.send(ctx, conn, jobs, p.host)
		p.pool.put(conn)
		jobs = jobs[done:]
	}
}

// Close implements Transport: it closes the idle connections.
func (p *pooled[C]) Close() error {
	p.pool.close()
	return nil
}

// pooledConn is what a connection pool keeps: QMTP and SMTP client
// connections.
type pooledConn interface {
	Broken() bool
	Close() error
}

// connPool keeps a few idle outgoing connections to one next hop for reuse.
// Idle connections older than the timeout are closed rather than reused: a
// server may drop idle clients, and a dead pooled connection would turn into
// a needless deferral.
type connPool[C pooledConn] struct {
	dial    func(ctx context.Context) (C, error)
	revive  func(C) bool // optional check before reuse (SMTP's RSET)
	maxIdle int
	timeout time.Duration

	mu   sync.Mutex
	idle []idleConn[C]
}

func newConnPool[C pooledConn](r Reuse, dial func(context.Context) (C, error), revive func(C) bool) connPool[C] {
	return connPool[C]{dial: dial, revive: revive, maxIdle: r.MaxIdle, timeout: r.IdleTimeout}
}

type idleConn[C pooledConn] struct {
	c     C
	since time.Time
}

// get returns an idle connection that is still good, or dials a new one.
func (p *connPool[C]) get(ctx context.Context) (C, error) {
	timeout := p.timeout
	if timeout <= 0 {
		timeout = DefaultIdleTimeout
	}
	for {
		p.mu.Lock()
		if len(p.idle) == 0 {
			p.mu.Unlock()
			return p.dial(ctx)
		}
		ic := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		p.mu.Unlock()
		if time.Since(ic.since) < timeout && !ic.c.Broken() && (p.revive == nil || p.revive(ic.c)) {
			return ic.c, nil
		}
		ic.c.Close()
	}
}

// put keeps c for reuse, or closes it when it is broken or the pool is full.
func (p *connPool[C]) put(c C) {
	if c.Broken() {
		c.Close()
		return
	}
	p.mu.Lock()
	if len(p.idle) >= max(p.maxIdle, 1) {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.idle = append(p.idle, idleConn[C]{c: c, since: time.Now()})
	p.mu.Unlock()
}

// close closes every idle connection.
func (p *connPool[C]) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, ic := range idle {
		ic.c.Close()
	}
}
