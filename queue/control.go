package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/qmgate/qmgate/internal/peercred"
	"golang.org/x/sys/unix"
)

// The control socket: while a daemon holds the queue's lock, `qmgate
// queue` and `mailq` reach it through dir/control. As with Postfix's showq
// (authorized_mailq_users, which defaults to everyone), any local user may
// read the queue summary (list, stat, show); changes (hold, release,
// remove, flush) are for the queue's owner and root. The socket is open to
// every user by its mode, the queue directory searchable (never listable)
// so that it can be reached, and each connection is judged by its peer's
// credentials as the kernel reports them (internal/peercred): where they
// cannot be read, the connection is refused. Each connection carries one
// JSON request and one JSON response:
//
//	{"op":"list"} {"op":"stat"} {"op":"show","ids":["ID"]}
//	{"op":"hold"|"release"|"remove"|"flush","ids":["ID",...]}
//	{"op":"drain"|"handoff","drain":{...}}   (drain.go; owner and root only)
//
//	{"rows":[...]} {"stats":{...}} {"detail":{...}}
//	{"errors":[{"id":"ID","not_found":true,"message":"..."}]}
//	{"errors":[{"denied":true,"message":"..."}]}

const (
	controlName       = "control"
	controlReadLimit  = 1 << 20
	controlIOTimeout  = 30 * time.Second
	controlOpTimeout  = 5 * time.Minute
	maxControlConns   = 16
	maxUnixSocketPath = 100 // sun_path: 108 bytes on Linux, 104 on the BSDs and macOS
)

type controlRequest struct {
	Op    string        `json:"op"`
	IDs   []string      `json:"ids,omitempty"`
	Drain *DrainRequest `json:"drain,omitempty"` // drain.go
}

type controlError struct {
	ID       string `json:"id,omitempty"`
	NotFound bool   `json:"not_found,omitempty"`
	Denied   bool   `json:"denied,omitempty"`
	Message  string `json:"message"`
}

type controlResponse struct {
	Rows   []Row          `json:"rows,omitempty"`
	Stats  *Stats         `json:"stats,omitempty"`
	Detail *Detail        `json:"detail,omitempty"`
	Drain  *DrainReport   `json:"drain,omitempty"`
	Errors []controlError `json:"errors,omitempty"`
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
	// Any user may connect; serveControlConn decides what each may do.
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return err
	}
	q.makeSearchable()
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

// makeSearchable lets every user reach the control socket: the queue
// directory gets search permission (x) for group and others, never read
// permission, so its names cannot be listed, and nothing in it but the
// socket is open to them.
func (q *Queue) makeSearchable() {
	st, err := os.Stat(q.dir)
	if err != nil {
		return
	}
	mode := st.Mode().Perm()
	if mode&0o011 == 0o011 {
		return
	}
	if err := os.Chmod(q.dir, mode|0o011); err != nil {
		q.log.Warn("queue: other users cannot reach the control socket to read the queue",
			"dir", q.dir, "err", err)
	}
}

func (q *Queue) serveControlConn(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	cred, err := peercred.Get(c)
	if err != nil {
		q.log.Warn("queue: control connection refused: cannot tell who is asking", "err", err)
		return
	}
	c.SetDeadline(time.Now().Add(controlIOTimeout))
	var req controlRequest
	if err := json.NewDecoder(io.LimitReader(c, controlReadLimit)).Decode(&req); err != nil {
		return
	}
	var resp *controlResponse
	if !readOnly(req.Op) && !mayChange(cred) {
		q.log.Warn("queue: control request refused: not the queue's owner",
			"op", sanitizeField(req.Op, 32), "uid", cred.UID, "pid", cred.PID)
		resp = &controlResponse{Errors: []controlError{{Denied: true,
			Message: fmt.Sprintf("only the queue's owner (uid %d) or root may change the queue", os.Geteuid())}}}
	} else {
		if isDrainOp(req.Op) {
			q.log.Info("queue: drain requested over the control socket", "op", req.Op, "uid", cred.UID, "pid", cred.PID)
		}
		ctx, cancel := context.WithTimeout(ctx, controlOpTimeout)
		defer cancel()
		resp = q.control(ctx, &req)
	}
	c.SetDeadline(time.Now().Add(controlIOTimeout))
	json.NewEncoder(c).Encode(resp)
}

// readOnly reports whether op only reads the queue, which any local user
// may do.
func readOnly(op string) bool {
	return op == "list" || op == "stat" || op == "show"
}

// mayChange admits the queue owner's uid (the daemon's) and root.
func mayChange(c peercred.Cred) bool {
	return c.UID == 0 || int(c.UID) == os.Geteuid()
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
	case "drain", "handoff":
		resp.Drain, err = q.controlDrain(ctx, req)
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

// deniedError is a change refused to a user who is neither the queue's
// owner nor root; it matches os.ErrPermission.
type deniedError struct{ msg string }

func (e *deniedError) Error() string { return e.msg }
func (e *deniedError) Unwrap() error { return os.ErrPermission }

func decodeErrors(ces []controlError) error {
	var errs []error
	for _, ce := range ces {
		if ce.NotFound {
			errs = append(errs, &idError{id: ce.ID})
		} else if ce.Denied {
			errs = append(errs, &deniedError{msg: ce.Message})
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
		return nil, dialError(c.dir, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(controlOpTimeout + controlIOTimeout)
	if isDrainOp(req.Op) {
		deadline = time.Now().Add(MaxDrainWait)
	}
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

func (c *controlClient) Hold(ctx context.Context, ids ...string) error { return c.op(ctx, "hold", ids) }
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
		// Another user's queue: only its daemon may be asked. The lock
		// file cannot be read from here, so the socket itself answers
		// whether a daemon runs.
		if err := probeControl(dir); err != nil {
			return nil, ownerError(dir, sys.Uid, err)
		}
		return &controlClient{dir: dir}, nil
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

// probeControl connects to dir's control socket and hangs up.
func probeControl(dir string) error {
	addr, cleanup, err := socketAddr(dir)
	if err != nil {
		return err
	}
	defer cleanup()
	conn, err := net.DialTimeout("unix", addr, controlIOTimeout)
	if err != nil {
		return err
	}
	return conn.Close()
}

// noDaemon reports whether a failed connection to the control socket
// means that no daemon listens there.
func noDaemon(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED)
}

// dialError says why the control socket of the queue in dir, which a
// daemon held a moment ago, cannot be reached.
func dialError(dir string, err error) error {
	switch {
	case noDaemon(err):
		return fmt.Errorf("queue %s: the daemon that held it is gone (its control socket does not answer); try again", dir)
	case errors.Is(err, unix.EACCES):
		return fmt.Errorf("queue %s: this user may not reach its control socket (permission denied); run this as the queue's owner or as root", dir)
	}
	return fmt.Errorf("queue %s is in use by another process, and its control socket does not answer: %w", dir, err)
}

// ownerError says why another user's queue cannot be read from here.
func ownerError(dir string, uid uint32, err error) error {
	who := fmt.Sprintf("uid %d", uid)
	if u, lerr := user.LookupId(fmt.Sprint(uid)); lerr == nil {
		who += " (" + u.Username + ")"
	}
	switch {
	case noDaemon(err):
		return fmt.Errorf("queue: %s belongs to %s and no daemon is running: run this as that user", dir, who)
	case errors.Is(err, unix.EACCES):
		return fmt.Errorf("queue: %s belongs to %s, and this user may not reach its control socket (permission denied on it or on a directory above it): run this as that user or as root", dir, who)
	}
	return fmt.Errorf("queue: %s belongs to %s, and its control socket does not answer: %w", dir, who, err)
}
