package queue

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// Record types of the journal (see doc.go for the layout of each).
const (
	recMessage  byte = 'M' // a new message: envelope, body reference, inline body
	recSnapshot byte = 'S' // the whole state of a live message (compaction)
	recUpdate   byte = 'R' // per-recipient state changes, with an attempt
	recFlags    byte = 'F' // message flags: held, delay notice sent
	recRemove   byte = 'X' // the message is gone (removed by the admin)
)

const (
	segMagic     = "qmgJ"
	segVersion   = 1
	segHeaderLen = 16
	recHeaderLen = 13

	// Hard bounds checked before any allocation when a journal is read
	// back, so a torn or garbage header can never make replay allocate
	// more than this. Options are clamped to fit.
	maxMetaLen = 64 << 20
	maxBodyLen = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadRecord is returned by decoders for a record whose CRC is valid but
// whose fields do not parse: a bug or a newer format, never a torn write.
var errBadRecord = errors.New("queue: malformed journal record")

// segmentHeader returns the 16 bytes that open segment seq.
func segmentHeader(seq uint64) []byte {
	b := make([]byte, segHeaderLen)
	copy(b, segMagic)
	binary.LittleEndian.PutUint32(b[4:], segVersion)
	binary.LittleEndian.PutUint64(b[8:], seq)
	return b
}

// recordHeader fills the 13-byte header except the CRC.
func recordHeader(typ byte, metaLen, bodyLen int) [recHeaderLen]byte {
	var h [recHeaderLen]byte
	h[4] = typ
	binary.LittleEndian.PutUint32(h[5:], uint32(metaLen))
	binary.LittleEndian.PutUint32(h[9:], uint32(bodyLen))
	return h
}

// partialCRC is the CRC of a record before the segment number is mixed in;
// writers compute it outside the queue lock.
func partialCRC(h *[recHeaderLen]byte, meta, body []byte) uint32 {
	c := crc32.Update(0, castagnoli, h[4:])
	c = crc32.Update(c, castagnoli, meta)
	return crc32.Update(c, castagnoli, body)
}

// finishCRC mixes the segment number in last: a record is valid only in the
// segment it was written to, so stale bytes from another segment can never
// pass for a record.
func finishCRC(partial uint32, seq uint64) uint32 {
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], seq)
	return crc32.Update(partial, castagnoli, s[:])
}

// enc appends the primitive field encodings: unsigned and signed varints,
// length-prefixed strings, single bytes and fixed 32-bit words.
type enc struct{ b []byte }

func (e *enc) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) byte1(v byte)     { e.b = append(e.b, v) }
func (e *enc) u32(v uint32)     { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *enc) time(t time.Time) { e.varint(timeNS(t)) }
func (e *enc) str(s string) {
	e.uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}
func (e *enc) status(s mail.Status) {
	e.byte1(byte(s.Class))
	e.str(s.Code)
	e.str(s.Text)
	e.uvarint(uint64(s.SMTP))
}

// timeNS encodes a time as Unix nanoseconds, with the zero time as 0.
func timeNS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func nsTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// dec reads what enc wrote. Every length is checked against the bytes that
// remain, so a malformed record cannot make it allocate.
type dec struct {
	b   []byte
	bad bool
}

func (d *dec) uvarint() uint64 { return decVarint(d, binary.Uvarint) }

func (d *dec) varint() int64 { return decVarint(d, binary.Varint) }

// decVarint reads one varint with read (binary.Uvarint or binary.Varint).
func decVarint[T uint64 | int64](d *dec, read func([]byte) (T, int)) T {
	v, n := read(d.b)
	if n <= 0 {
		d.bad = true
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) byte1() byte {
	if len(d.b) < 1 {
		d.bad = true
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) u32() uint32 {
	if len(d.b) < 4 {
		d.bad = true
		d.b = nil
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *dec) time() time.Time { return nsTime(d.varint()) }

func (d *dec) str() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.bad = true
		d.b = nil
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// count reads an element count, bounded by the bytes left (every element
// takes at least one byte).
func (d *dec) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.bad = true
		d.b = nil
		return 0
	}
	return int(n)
}

// end returns errBadRecord unless the record parsed and nothing is left.
func (d *dec) end() error {
	if d.bad || len(d.b) != 0 {
		return errBadRecord
	}
	return nil
}

// endID is end for a record that names a message, whose ID must be valid.
func (d *dec) endID(id string) error {
	if !ValidID(id) {
		return errBadRecord
	}
	return d.end()
}

func (d *dec) status() mail.Status {
	var s mail.Status
	s.Class = mail.Class(d.byte1())
	if s.Class > mail.Permanent {
		d.bad = true
	}
	s.Code = d.str()
	s.Text = d.str()
	s.SMTP = int(d.uvarint())
	return s
}

// bodyRef says where a message's body is. An inline body lives in a
// journal segment (seq, off); an external one in body/<ID>.
// The prefix (Writer.SetPrefix) is header bytes that go in front of the
// body when it is read back; it lives in the record itself, covered by the
// record's CRC, so it is never stored apart from the envelope that needs it.
type bodyRef struct {
	external bool
	seq      uint64
	off      int64
	size     int64
	crc      uint32 // CRC-32C of the body bytes
	prefix   string // at most MaxPrefixBytes; "" for none
}

// Body kind bits: 1 the body is external; 2 a prefix follows the CRC.
// Records written before prefixes existed have only 0 or 1, and read back
// unchanged.
const (
	bodyExternal  = 1
	bodyHasPrefix = 2
)

func (e *enc) bodyRef(b bodyRef) {
	var fl byte
	if b.external {
		fl |= bodyExternal
	}
	if b.prefix != "" {
		fl |= bodyHasPrefix
	}
	e.byte1(fl)
	e.uvarint(uint64(b.size))
	e.u32(b.crc)
	if b.prefix != "" {
		e.str(b.prefix)
	}
}

func (d *dec) bodyRef() bodyRef {
	fl := d.byte1()
	if fl&^(bodyExternal|bodyHasPrefix) != 0 {
		d.bad = true
	}
	size := d.uvarint()
	if size > 1<<62 {
		d.bad = true
	}
	b := bodyRef{external: fl&bodyExternal != 0, size: int64(size), crc: d.u32()}
	if fl&bodyHasPrefix != 0 {
		b.prefix = d.str()
		if b.prefix == "" || len(b.prefix) > MaxPrefixBytes {
			d.bad = true
		}
	}
	return b
}

// attempt is one delivery attempt of one recipient.
type attempt struct {
	at     time.Time
	route  string
	host   string
	status mail.Status
}

func (e *enc) attempt(a *attempt) {
	e.time(a.at)
	e.str(a.route)
	e.str(a.host)
	e.status(a.status)
}

func (d *dec) attempt() attempt {
	return attempt{at: d.time(), route: d.str(), host: d.str(), status: d.status()}
}

// Recipient flag bits.
const rflagNotified = 1

// Message flag bits.
const (
	mflagHeld          = 1
	mflagDelayNotified = 2
)

// rcptUpdate is one entry of an 'R' record: the new state of recipient idx,
// plus the attempt that led to it, if any.
type rcptUpdate struct {
	idx      int
	state    State
	notified bool
	attempts int
	next     time.Time
	dest     string
	final    mail.Status // meaningful when state is Failed
	attempt  *attempt
}

func (e *enc) rcptState(u *rcptUpdate) {
	e.uvarint(uint64(u.idx))
	e.byte1(byte(u.state))
	var fl byte
	if u.notified {
		fl |= rflagNotified
	}
	e.byte1(fl)
	e.uvarint(uint64(u.attempts))
	e.time(u.next)
	e.str(u.dest)
	if u.state == Failed {
		e.status(u.final)
	}
}

func (d *dec) rcptState() rcptUpdate {
	var u rcptUpdate
	u.idx = int(d.uvarint())
	u.state = State(d.byte1())
	if u.state > Failed {
		d.bad = true
	}
	u.notified = d.byte1()&rflagNotified != 0
	u.attempts = int(d.uvarint())
	u.next = d.time()
	u.dest = d.str()
	if u.state == Failed {
		u.final = d.status()
	}
	return u
}

// encodeMessage builds the meta of an 'M' record.
func encodeMessage(dst []byte, id string, received time.Time, env *mail.Envelope, body bodyRef) []byte {
	e := enc{dst}
	e.str(id)
	e.time(received)
	e.str(env.Sender)
	e.uvarint(uint64(len(env.Recipients)))
	for _, r := range env.Recipients {
		e.str(r)
	}
	e.bodyRef(body)
	return e.b
}

type messageMeta struct {
	id       string
	received time.Time
	sender   string
	rcpts    []string
	body     bodyRef
}

func decodeMessage(b []byte) (messageMeta, error) {
	d := dec{b: b}
	var m messageMeta
	m.id = d.str()
	m.received = d.time()
	m.sender = d.str()
	n := d.count()
	m.rcpts = make([]string, 0, n)
	for i := 0; i < n && !d.bad; i++ {
		m.rcpts = append(m.rcpts, d.str())
	}
	m.body = d.bodyRef()
	return m, d.endID(m.id)
}

// encodeSnapshot builds the meta of an 'S' record: everything replay needs
// to rebuild m without any older record. A message with so many recipients
// and attempts that the record would pass maxMetaLen keeps fewer attempts
// per recipient (the latest ones), so replay never mistakes it for a torn
// record.
func encodeSnapshot(dst []byte, m *message) []byte {
	for keep := -1; ; keep /= 2 {
		b := encodeSnapshotHistory(dst, m, keep)
		if len(b) <= maxMetaLen || keep == 0 {
			return b
		}
		if keep < 0 {
			keep = 16
		}
	}
}

// encodeSnapshotHistory encodes with at most keep attempts per recipient
// (keep < 0: all).
func encodeSnapshotHistory(dst []byte, m *message, keep int) []byte {
	e := enc{dst}
	e.str(m.id)
	e.time(m.received)
	e.str(m.sender)
	e.byte1(m.flags())
	e.bodyRef(m.body)
	e.uvarint(uint64(len(m.rcpts)))
	for i := range m.rcpts {
		r := &m.rcpts[i]
		u := r.update(i)
		e.str(r.addr)
		e.rcptState(&u)
		h := r.history
		if keep >= 0 && len(h) > keep {
			h = h[len(h)-keep:]
		}
		e.uvarint(uint64(len(h)))
		for j := range h {
			e.attempt(&h[j])
		}
	}
	return e.b
}

func decodeSnapshot(b []byte) (*message, error) {
	d := dec{b: b}
	m := &message{}
	m.id = d.str()
	m.received = d.time()
	m.sender = d.str()
	m.setFlags(d.byte1())
	m.body = d.bodyRef()
	n := d.count()
	m.rcpts = make([]rcpt, n)
	for i := 0; i < n && !d.bad; i++ {
		r := &m.rcpts[i]
		r.addr = d.str()
		u := d.rcptState()
		if u.idx != i {
			d.bad = true
		}
		r.apply(&u, 0)
		h := d.count()
		r.history = make([]attempt, 0, h)
		for j := 0; j < h && !d.bad; j++ {
			r.history = append(r.history, d.attempt())
		}
	}
	if err := d.endID(m.id); err != nil {
		return nil, err
	}
	return m, nil
}

// encodeUpdate builds the meta of an 'R' record.
// updateSizeHint guesses the encoded size of an update record, so that
// encodeUpdate allocates once in the common case.
func updateSizeHint(id string, ups []rcptUpdate) int {
	n := 16 + len(id)
	for i := range ups {
		u := &ups[i]
		n += 64 + len(u.dest) + len(u.final.Code) + len(u.final.Text)
		if a := u.attempt; a != nil {
			n += 48 + len(a.route) + len(a.host) + len(a.status.Code) + len(a.status.Text)
		}
	}
	return n
}

func encodeUpdate(dst []byte, id string, ups []rcptUpdate) []byte {
	e := enc{dst}
	e.str(id)
	e.uvarint(uint64(len(ups)))
	for i := range ups {
		u := &ups[i]
		e.rcptState(u)
		if u.attempt != nil {
			e.byte1(1)
			e.attempt(u.attempt)
		} else {
			e.byte1(0)
		}
	}
	return e.b
}

func decodeUpdate(b []byte) (string, []rcptUpdate, error) {
	d := dec{b: b}
	id := d.str()
	n := d.count()
	ups := make([]rcptUpdate, 0, n)
	for i := 0; i < n && !d.bad; i++ {
		u := d.rcptState()
		switch d.byte1() {
		case 0:
		case 1:
			a := d.attempt()
			u.attempt = &a
		default:
			d.bad = true
		}
		ups = append(ups, u)
	}
	return id, ups, d.end()
}

func encodeFlags(dst []byte, id string, flags byte) []byte {
	e := enc{dst}
	e.str(id)
	e.byte1(flags)
	return e.b
}

func decodeFlags(b []byte) (string, byte, error) {
	d := dec{b: b}
	id := d.str()
	fl := d.byte1()
	return id, fl, d.end()
}

func encodeRemove(dst []byte, id string) []byte {
	e := enc{dst}
	e.str(id)
	return e.b
}

func decodeRemove(b []byte) (string, error) {
	d := dec{b: b}
	id := d.str()
	return id, d.end()
}
