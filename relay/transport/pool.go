package transport

import (
	"context"
	"sync"
	"time"
)

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
