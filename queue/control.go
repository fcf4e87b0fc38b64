package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The control socket: while a daemon holds the queue's lock, `qmgate
// queue` reaches it through dir/control, a unix socket only the queue's
// owner (or root) may use, both by file mode and by a check of the peer's
// credentials. Each connection carries one JSON request and one JSON
// response:
//
//	{"op":"list"} {"op":"stat"} {"op":"show","ids":["ID"]}
//	{"op":"hold"|"release"|"remove"|"flush","ids":["ID",...]}
//
//	{"rows":[...]} {"stats":{...}} {"detail":{...}}
//	{"errors":[{"id":"ID","not_found":true,"message":"..."}]}

const (
	controlName       = "control"
	controlReadLimit  = 1 << 20
	controlIOTimeout  = 30 * time.Second
	controlOpTimeout  = 5 * time.Minute
	maxControlConns   = 16
	maxUnixSocketPath = 100 // sun_path is 108 bytes; keep a margin
)

type controlRequest struct {
	Op  string   `json:"op"`
	IDs []string `json:"ids,omitempty"`
}

type controlError struct {
	ID       string `json:"id,omitempty"`
	NotFound bool   `json:"not_found,omitempty"`
	Message  string `json:"message"`
}

type controlResponse struct {
	Rows   []Row          `json:"rows,omitempty"`
	Stats  *Stats         `json:"stats,omitempty"`
	Detail *Detail        `json:"detail,omitempty"`
	Errors []controlError `json:"errors,omitempty"`
}

// socketAddr returns the address of dir's control socket. A path too long
// for sun_path is reached through /proc/self/fd of an open directory.
func socketAddr(dir string) (string, func(), error) {
	p := filepath.Join(dir, controlName)
	if len(p) <= maxUnixSocketPath {
		return p, func() {}, nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), controlName), func() { d.Close() }, nil
}

// ServeControl serves the control socket until ctx ends or the queue is
// closed. Run it in the daemon, beside the relay.
func (q *Queue) ServeControl(ctx context.Context) error {
	addr, cleanup, err := socketAddr(q.dir)
	if err != nil {
		return err
	}
	defer cleanup()
	path := filepath.Join(q.dir, controlName)
	os.Remove(path) // a stale socket from a crash: we hold the lock, so it is ours
	old := unix.Umask(0o077)
	ln, err := net.Listen("unix", addr)
	unix.Umask(old)
	if err != nil {
		return err
	}
	os.Chmod(path, 0o600)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-ctx.Done():
		case <-q.stop:
		}
		ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxControlConns)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || isClosed(q) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			q.serveControlConn(ctx, conn.(*net.UnixConn))
		}()
	}
}

func isClosed(q *Queue) bool {
	select {
	case <-q.stop:
		return true
	default:
		return false
	}
}

func (q *Queue) serveControlConn(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	if !peerAllowed(c) {
		q.log.Warn("queue: control connection refused: not the queue's owner")
		return
	}
	c.SetDeadline(time.Now().Add(controlIOTimeout))
	var req controlRequest
	if err := json.NewDecoder(io.LimitReader(c, controlReadLimit)).Decode(&req); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, controlOpTimeout)
	defer cancel()
	resp := q.control(ctx, &req)
	c.SetDeadline(time.Now().Add(controlIOTimeout))
	json.NewEncoder(c).Encode(resp)
}

// peerAllowed admits the queue owner's uid and root.
func peerAllowed(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return false
	}
	return cred.Uid == 0 || int(cred.Uid) == os.Geteuid()
}

func (q *Queue) control(ctx context.Context, req *controlRequest) *controlResponse {
	resp := &controlResponse{}
	var err error
	switch req.Op {
	case "list":
		resp.Rows, err = q.List(ctx)
		if err == nil && resp.Rows == nil {
			resp.Rows = []Row{}
		}
	case "stat":
		resp.Stats, err = q.Stat(ctx)
	case "show":
		if len(req.IDs) != 1 {
			err = errors.New("show takes one ID")
			break
		}
		resp.Detail, err = q.Show(ctx, req.IDs[0])
	case "hold":
		err = q.Hold(ctx, req.IDs...)
	case "release":
		err = q.Release(ctx, req.IDs...)
	case "remove":
		err = q.Remove(ctx, req.IDs...)
	case "flush":
		err = q.Flush(ctx, req.IDs...)
	default:
		err = fmt.Errorf("unknown control operation %q", sanitizeField(req.Op, 32))
	}
	resp.Errors = encodeErrors(err)
	return resp
}

// encodeErrors flattens a (joined) error into per-ID entries.
func encodeErrors(err error) []controlError {
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	var out []controlError
	for _, e := range errs {
		ce := controlError{Message: e.Error(), NotFound: errors.Is(e, ErrNotFound)}
		if ce.NotFound {
			var ie *idError
			if errors.As(e, &ie) {
				ce.ID = ie.id
			}
		}
		out = append(out, ce)
	}
	return out
}

// idError is ErrNotFound for one ID.
type idError struct{ id string }

func (e *idError) Error() string { return e.id + ": " + ErrNotFound.Error() }
func (e *idError) Unwrap() error { return ErrNotFound }

func decodeErrors(ces []controlError) error {
	var errs []error
	for _, ce := range ces {
		if ce.NotFound {
			errs = append(errs, &idError{id: ce.ID})
		} else {
			errs = append(errs, errors.New(ce.Message))
		}
	}
	return errors.Join(errs...)
}

// controlClient is Admin over a daemon's control socket.
type controlClient struct{ dir string }

func (c *controlClient) call(ctx context.Context, req controlRequest) (*controlResponse, error) {
	addr, cleanup, err := socketAddr(c.dir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", addr)
	if err != nil {
		return nil, fmt.Errorf("queue %s is in use by another process, and its control socket does not answer: %w", c.dir, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(controlOpTimeout + controlIOTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	conn.SetDeadline(deadline)
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return nil, fmt.Errorf("queue control: %w", err)
	}
	var resp controlResponse
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		return nil, fmt.Errorf("queue control: no answer: %w", err)
	}
	return &resp, decodeErrors(resp.Errors)
}

func (c *controlClient) List(ctx context.Context) ([]Row, error) {
	resp, err := c.call(ctx, controlRequest{Op: "list"})
	if err != nil {
		return nil, err
	}
	return resp.Rows, nil
}

func (c *controlClient) Stat(ctx context.Context) (*Stats, error) {
	resp, err := c.call(ctx, controlRequest{Op: "stat"})
	if err != nil {
		return nil, err
	}
	if resp.Stats == nil {
		return nil, errors.New("queue control: empty answer")
	}
	return resp.Stats, nil
}

func (c *controlClient) Show(ctx context.Context, id string) (*Detail, error) {
	resp, err := c.call(ctx, controlRequest{Op: "show", IDs: []string{id}})
	if err != nil {
		return nil, err
	}
	if resp.Detail == nil {
		return nil, errors.New("queue control: empty answer")
	}
	return resp.Detail, nil
}

func (c *controlClient) op(ctx context.Context, op string, ids []string) error {
	_, err := c.call(ctx, controlRequest{Op: op, IDs: ids})
	return err
}

func (c *controlClient) Hold(ctx context.Context, ids ...string) error {
	return c.op(ctx, "hold", ids)
}
func (c *controlClient) Release(ctx context.Context, ids ...string) error {
	return c.op(ctx, "release", ids)
}
func (c *controlClient) Remove(ctx context.Context, ids ...string) error {
	return c.op(ctx, "remove", ids)
}
func (c *controlClient) Flush(ctx context.Context, ids ...string) error {
	return c.op(ctx, "flush", ids)
}
func (c *controlClient) Close() error { return nil }

// OpenAdmin returns the Admin for the queue in dir: the queue itself,
// opened passively (no deliveries, no background work) when no process
// holds it, or a client of the control socket of the daemon that does.
// The directory must exist. Opened directly, the queue writes files, so
// that is only done by the directory's owner: anyone else (root included)
// gets the control socket, or an error saying whom to run as.
func OpenAdmin(dir string, opt Options) (Admin, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("queue: %s is not a directory", dir)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		if daemonHolds(dir) {
			return &controlClient{dir: dir}, nil
		}
		return nil, fmt.Errorf("queue: %s belongs to uid %d and no daemon is running: run this as that user", dir, sys.Uid)
	}
	opt.Passive = true
	q, err := Open(dir, opt)
	if err == nil {
		return q, nil
	}
	if !errors.Is(err, ErrLocked) {
		return nil, err
	}
	return &controlClient{dir: dir}, nil
}

// daemonHolds reports whether some process holds dir's lock, without
// creating anything.
func daemonHolds(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "lock"))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return err == unix.EWOULDBLOCK
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}
