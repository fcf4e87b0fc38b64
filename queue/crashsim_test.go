package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qmgate/qmgate/mail"
)

// simFS is an in-memory file system that models what survives a power
// loss: file data only up to the last fsync/fdatasync, directory entries
// only as of the last fsync of their directory. On crash, writes and
// directory changes made since then survive at random, and unsynced
// appends may survive torn (a prefix, then zeros). SIGKILL cannot test
// this, since the page cache outlives the process.
type simFS struct {
	mu      sync.Mutex
	dirs    map[string]*simDir
	ops     int
	crashAt int          // the op at which the machine "loses power"
	onCrash func(*simFS) // called at that instant, under mu
	dead    bool         // after the crash every op fails
}

type simDir struct {
	entries map[string]*simInode
	durable map[string]*simInode
}

type simInode struct {
	data    []byte
	durable []byte
	mtime   time.Time
}

func newSimFS() *simFS { return &simFS{dirs: map[string]*simDir{}} }

// op counts an operation and fires the crash; it returns EIO once dead.
func (s *simFS) op() error {
	if s.dead {
		return unix.EIO
	}
	s.ops++
	if s.crashAt > 0 && s.ops == s.crashAt {
		s.onCrash(s)
		s.dead = true
		return unix.EIO
	}
	return nil
}

func (s *simFS) dirOf(name string) (*simDir, string, error) {
	d := s.dirs[filepath.Dir(name)]
	if d == nil {
		return nil, "", unix.ENOENT
	}
	return d, filepath.Base(name), nil
}

func (s *simFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.op(); err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	d, base, err := s.dirOf(name)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	ino := d.entries[base]
	switch {
	case ino != nil && flag&os.O_EXCL != 0:
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrExist}
	case ino == nil && flag&os.O_CREATE == 0:
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
	case ino == nil:
		ino = &simInode{mtime: time.Now()}
		d.entries[base] = ino
	}
	return &simFile{fs: s, ino: ino, name: name}, nil
}

func (s *simFS) Remove(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.op(); err != nil {
		return &os.PathError{Op: "remove", Path: name, Err: err}
	}
	d, base, err := s.dirOf(name)
	if err == nil && d.entries[base] == nil {
		err = unix.ENOENT
	}
	if err != nil {
		return &os.PathError{Op: "remove", Path: name, Err: err}
	}
	delete(d.entries, base)
	return nil
}

func (s *simFS) Mkdir(name string, perm os.FileMode) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.op(); err != nil {
		return err
	}
	if s.dirs[name] != nil {
		return &os.PathError{Op: "mkdir", Path: name, Err: os.ErrExist}
	}
	s.dirs[name] = &simDir{entries: map[string]*simInode{}, durable: map[string]*simInode{}}
	return nil
}

func (s *simFS) ReadDir(name string) ([]os.DirEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.op(); err != nil {
		return nil, err
	}
	d := s.dirs[name]
	if d == nil {
		return nil, &os.PathError{Op: "readdir", Path: name, Err: os.ErrNotExist}
	}
	var out []os.DirEntry
	for n, ino := range d.entries {
		out = append(out, simEntry{name: n, size: int64(len(ino.data)), mtime: ino.mtime})
	}
	slices.SortFunc(out, func(a, b os.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

func (s *simFS) Stat(name string) (os.FileInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.op(); err != nil {
		return nil, err
	}
	if s.dirs[name] != nil {
		return simEntry{name: filepath.Base(name), dir: true}, nil
	}
	d, base, err := s.dirOf(name)
	if err == nil && d.entries[base] == nil {
		err = os.ErrNotExist
	}
	if err != nil {
		return nil, &os.PathError{Op: "stat", Path: name, Err: err}
	}
	ino := d.entries[base]
	return simEntry{name: base, size: int64(len(ino.data)), mtime: ino.mtime}, nil
}

func (s *simFS) SyncDir(dir string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.op(); err != nil {
		return err
	}
	d := s.dirs[dir]
	if d == nil {
		return os.ErrNotExist
	}
	d.durable = maps(d.entries)
	return nil
}

func maps(m map[string]*simInode) map[string]*simInode {
	c := make(map[string]*simInode, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// crashed returns what a reboot finds: durable state plus a random part
// of what was never synced.
func (s *simFS) crashed(r *rand.Rand) *simFS {
	out := newSimFS()
	inodes := map[*simInode]*simInode{}
	survive := func(ino *simInode) *simInode {
		if c, ok := inodes[ino]; ok {
			return c
		}
		data := slices.Clone(ino.durable)
		if len(ino.data) > len(ino.durable) && bytes.HasPrefix(ino.data, ino.durable) && r.IntN(2) == 0 {
			tail := ino.data[len(ino.durable):]
			k := r.IntN(len(tail) + 1)
			data = append(data, tail[:k]...)
			if r.IntN(2) == 0 { // the size reached disk, the data did not
				data = append(data, make([]byte, r.IntN(len(tail)-k+1))...)
			}
		} else if !bytes.Equal(ino.data, ino.durable) && r.IntN(4) == 0 {
			data = slices.Clone(ino.data)
		}
		c := &simInode{data: data, durable: slices.Clone(data), mtime: ino.mtime}
		inodes[ino] = c
		return c
	}
	for name, d := range s.dirs {
		nd := &simDir{entries: map[string]*simInode{}}
		for n, ino := range d.durable {
			if d.entries[n] == ino || r.IntN(2) == 0 { // an unsynced unlink may or may not stick
				nd.entries[n] = survive(ino)
			}
		}
		for n, ino := range d.entries {
			if d.durable[n] != ino && r.IntN(2) == 0 { // an unsynced create may or may not stick
				nd.entries[n] = survive(ino)
			}
		}
		nd.durable = maps(nd.entries)
		out.dirs[name] = nd
	}
	return out
}

type simEntry struct {
	name  string
	size  int64
	mtime time.Time
	dir   bool
}

func (e simEntry) Name() string { return e.name }
func (e simEntry) IsDir() bool  { return e.dir }
func (e simEntry) Type() fs.FileMode {
	if e.dir {
		return fs.ModeDir
	}
	return 0
}
func (e simEntry) Info() (fs.FileInfo, error) { return e, nil }
func (e simEntry) Size() int64                { return e.size }
func (e simEntry) Mode() fs.FileMode          { return e.Type() | 0o600 }
func (e simEntry) ModTime() time.Time         { return e.mtime }
func (e simEntry) Sys() any                   { return nil }

type simFile struct {
	fs   *simFS
	ino  *simInode
	name string
	pos  int64
}

func (f *simFile) Name() string { return f.name }
func (f *simFile) Close() error { return nil }

func (f *simFile) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.pos)
	f.pos += int64(n)
	return n, err
}

func (f *simFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.op(); err != nil {
		return 0, err
	}
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *simFile) Write(p []byte) (int, error) {
	n, err := f.WriteAt(p, f.pos)
	f.pos += int64(n)
	return n, err
}

func (f *simFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.op(); err != nil {
		return 0, err
	}
	if end := off + int64(len(p)); end > int64(len(f.ino.data)) {
		f.ino.data = append(f.ino.data, make([]byte, end-int64(len(f.ino.data)))...)
	}
	copy(f.ino.data[off:], p)
	f.ino.mtime = time.Now()
	return len(p), nil
}

func (f *simFile) Sync() error { return f.Datasync() }

func (f *simFile) Datasync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.op(); err != nil {
		return err
	}
	f.ino.durable = slices.Clone(f.ino.data)
	return nil
}

func (f *simFile) Truncate(n int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.op(); err != nil {
		return err
	}
	if n < int64(len(f.ino.data)) {
		f.ino.data = f.ino.data[:n]
	}
	return nil
}

func (f *simFile) Stat() (os.FileInfo, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.op(); err != nil {
		return nil, err
	}
	return simEntry{name: filepath.Base(f.name), size: int64(len(f.ino.data)), mtime: f.ino.mtime}, nil
}

// TestPowerLoss runs the queue under concurrent load on simFS, cuts the
// power at a random file operation, reboots (keeping only what the model
// allows), and checks every acknowledgement made before the cut.
func TestPowerLoss(t *testing.T) {
	rounds := 150
	if testing.Short() {
		rounds = 30
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 3))
	dir := t.TempDir() // for the lock file; the queue's files live in simFS
	sfs := newSimFS()
	sfs.Mkdir(filepath.Dir(dir), 0o700)
	exp := expectation{acked: map[string][]string{}, removed: map[string]bool{}, delivered: map[string]map[string]bool{},
		mayRemove: map[string]bool{}, mayDeliver: map[string]map[string]bool{}, gone: map[string]bool{}}
	checked := 0
	for round := 0; round < rounds; round++ {
		var ackMu sync.Mutex
		var lines []string // acknowledgements, as the crash writer prints them
		say := func(format string, args ...any) {
			ackMu.Lock()
			lines = append(lines, fmt.Sprintf(format, args...))
			ackMu.Unlock()
		}
		var after *simFS
		var ackedBefore []string
		crashed := make(chan struct{})
		sfs.mu.Lock()
		sfs.crashAt = sfs.ops + 20 + r.IntN(2500)
		sfs.onCrash = func(s *simFS) {
			ackMu.Lock()
			ackedBefore = slices.Clone(lines)
			ackMu.Unlock()
			after = s.crashed(r)
			close(crashed)
		}
		sfs.mu.Unlock()

		opt := crashOptions()
		opt.fs = sfs
		opt.InlineMax = 2 << 10
		opt.SegmentSize = 32 << 10
		q, err := Open(dir, opt)
		if err == nil {
			simWorkload(q, seed+uint64(round), say, crashed)
			q.Close()
		} else {
			sfs.mu.Lock()
			dead := sfs.dead
			sfs.mu.Unlock()
			if !dead {
				t.Fatalf("round %d: Open: %v", round, err)
			}
			<-crashed // the crash hit Open itself
		}
		for _, l := range ackedBefore {
			f := strings.Fields(l)
			switch f[0] {
			case "A":
				exp.acked[f[1]] = strings.Split(f[2], ",")
				checked++
			case "d":
				addTo(exp.mayDeliver, f[1], f[2])
			case "D":
				addTo(exp.delivered, f[1], f[2])
			case "r":
				exp.mayRemove[f[1]] = true
			case "R":
				exp.removed[f[1]] = true
			}
		}
		// Intents printed after the crash instant still describe work
		// that may have reached the disk before it.
		ackMu.Lock()
		for _, l := range lines {
			f := strings.Fields(l)
			switch f[0] {
			case "d":
				addTo(exp.mayDeliver, f[1], f[2])
			case "r":
				exp.mayRemove[f[1]] = true
			}
		}
		ackMu.Unlock()
		sfs = after
		vopt := crashOptions()
		vopt.fs = sfs
		vopt.Passive = true
		vq, err := Open(dir, vopt)
		if err != nil {
			t.Fatalf("round %d: reopen after power loss: %v", round, err)
		}
		verifyAfterCrash(t, vq, round, &exp, r)
		vq.Close()
	}
	t.Logf("%d power cuts, %d acknowledged messages checked", rounds, checked)
}

// simWorkload puts, delivers and removes concurrently until the crash.
func simWorkload(q *Queue, seed uint64, say func(string, ...any), crashed <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-crashed
		cancel()
	}()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := 0; ctx.Err() == nil; i++ {
				sender := fmt.Sprintf("s%d@w%d.example", i, w)
				var rcpts []string
				for k := 0; k <= r.IntN(3); k++ {
					rcpts = append(rcpts, fmt.Sprintf("r%d@d%d.example", k, r.IntN(4)))
				}
				body := selfCheckingBody(r, sender, rcpts)
				if r.IntN(3) == 0 {
					body = selfCheckingBody(rand.New(rand.NewPCG(seed, uint64(i))), sender, rcpts)
				}
				var prefix []byte
				if r.IntN(3) == 0 {
					// The envelope's checksum line moves into the prefix,
					// which must then survive with the record.
					k := bytes.Index(body, []byte("X-Env-Sum: "))
					e := k + bytes.IndexByte(body[k:], '\n') + 1
					prefix = slices.Clone(body[k:e])
					body = append(body[:k:k], body[e:]...)
				}
				id, err := putPrefixed(ctx, q, mail.Envelope{Sender: sender, Recipients: rcpts}, prefix, body)
				if err != nil {
					return
				}
				say("A %s %s", id, strings.Join(rcpts, ","))
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(seed, 100))
		for ctx.Err() == nil {
			ds := q.Claim(4)
			if len(ds) == 0 {
				wctx, c := context.WithTimeout(ctx, 5*time.Millisecond)
				q.Wait(wctx)
				c()
				continue
			}
			for _, d := range ds {
				var res []Result
				for _, rc := range d.Recipients {
					st := mail.OK("ok")
					if r.IntN(3) == 0 {
						st = mail.Temp("4.4.1", "later")
					}
					res = append(res, Result{Recipient: rc, Status: st})
					if st.IsAccept() {
						say("d %s %s", d.ID, rc)
					}
				}
				if q.Record(ctx, d, res) != nil {
					return
				}
				for _, x := range res {
					if x.Status.IsAccept() {
						say("D %s %s", d.ID, x.Recipient)
					}
				}
			}
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(seed, 200))
		for ctx.Err() == nil {
			rows, _ := q.List(ctx)
			if len(rows) > 0 {
				id := rows[r.IntN(len(rows))].ID
				say("r %s", id)
				if err := q.Remove(ctx, id); err == nil {
					say("R %s", id)
				} else if !errors.Is(err, ErrNotFound) {
					return
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Millisecond):
			}
		}
	}()
	wg.Wait()
}

// putPrefixed queues body with a prefix (none when nil).
func putPrefixed(ctx context.Context, q *Queue, env mail.Envelope, prefix, body []byte) (string, error) {
	if prefix == nil {
		return q.Put(ctx, env, bytes.NewReader(body))
	}
	w, err := q.NewMessage(ctx)
	if err != nil {
		return "", err
	}
	if _, err := w.Write(body); err != nil {
		w.Abort()
		return "", err
	}
	if err := w.SetPrefix(prefix); err != nil {
		w.Abort()
		return "", err
	}
	return w.Commit(ctx, env)
}
