package queue

import (
	"bufio"
	"errors"
	"hash/crc32"
	"io"
	"os"
)

// ErrCorrupt: a body's bytes differ from what was committed (media
// error). It reaches callers wrapped in an *Error, so it is temporary.
var ErrCorrupt = errors.New("queue: message body does not match its checksum")

// openBody opens m's body where it is now (compaction may move an inline
// body; the lock keeps the old segment from being deleted under us).
func (q *Queue) openBody(m *message) (io.ReadCloser, error) {
	q.mu.Lock()
	if m.dead {
		q.mu.Unlock()
		return nil, notFound(m.id)
	}
	ref := m.body
	path := q.segPath(ref.seq)
	if ref.external {
		path = q.bodyPath(m.id)
	}
	f, err := q.fs.OpenFile(path, os.O_RDONLY, 0)
	q.mu.Unlock()
	if err != nil {
		return nil, &Error{Op: "open body", Err: err}
	}
	off := ref.off
	if ref.external {
		off = 0
		st, err := f.Stat()
		if err == nil && st.Size() != ref.size {
			err = ErrCorrupt
		}
		if err != nil {
			f.Close()
			q.log.Error("queue: body unreadable", "id", m.id, "err", err)
			return nil, &Error{Op: "open body", Err: err}
		}
	}
	return &bodyReader{q: q, id: m.id, f: f,
		r:    bufio.NewReaderSize(io.NewSectionReader(f, off, ref.size), 32<<10),
		left: ref.size, want: ref.crc}, nil
}

// bodyReader streams a body and checks its CRC: the last Read returns
// io.EOF only if every byte was the committed one.
type bodyReader struct {
	q    *Queue
	id   string
	f    file
	r    io.Reader
	left int64
	crc  uint32
	want uint32
	err  error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.crc = crc32.Update(b.crc, castagnoli, p[:n])
	b.left -= int64(n)
	if b.left == 0 {
		if b.crc != b.want {
			b.q.log.Error("queue: body checksum mismatch", "id", b.id)
			b.err = &Error{Op: "read body", Err: ErrCorrupt}
			return 0, b.err
		}
		b.err = io.EOF
		if n > 0 {
			return n, nil
		}
		return 0, io.EOF
	}
	if err == io.EOF {
		err = &Error{Op: "read body", Err: io.ErrUnexpectedEOF}
	} else if err != nil {
		err = &Error{Op: "read body", Err: err}
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.f.Close() }
