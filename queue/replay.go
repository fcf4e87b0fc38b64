package queue

import (
	"bufio"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"slices"
)

// replay rebuilds the index from the journal segments, oldest first.
func (q *Queue) replay() error {
	ents, err := q.fs.ReadDir(q.journalDir)
	if err != nil {
		return &Error{Op: "open", Err: err}
	}
	var seqs []uint64
	for _, e := range ents {
		if seq, ok := parseSegName(e.Name()); ok {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	rs := &replayState{deadBodies: map[string]bool{}}
	for _, seq := range seqs {
		valid, err := q.replaySegment(seq, rs)
		if err != nil {
			return &Error{Op: "replay", Err: err}
		}
		s := &segment{seq: seq, size: valid, durable: valid}
		q.segs = append(q.segs, s)
		q.segBySeq[seq] = s
		q.nextSeq = seq + 1
	}
	for _, m := range q.msgs {
		if !m.body.external {
			continue
		}
		id := m.id
		st, err := q.fs.Stat(q.bodyPath(id))
		if err != nil || st.Size() != m.body.size {
			// Only a commit that failed (and was never acknowledged) can
			// leave a record whose body file is gone.
			q.log.Error("queue: dropping message whose body file is missing or truncated", "id", id, "err", err)
			q.msgs.drop(id)
			continue
		}
		delete(rs.deadBodies, id)
	}
	now := q.now()
	for _, m := range q.msgs {
		for _, u := range m.segs {
			if s := q.segBySeq[u.seq]; s != nil {
				s.refs++
				s.live += u.bytes
			}
		}
		q.scheduleLocked(m, now)
	}
	q.ids.observe(rs.maxID)
	for id := range rs.deadBodies {
		q.unlinks = append(q.unlinks, q.bodyPath(id))
	}
	q.flushUnlinks()
	if rs.torn > 0 {
		q.log.Warn("queue: ignored records torn by a crash (never acknowledged)", "segments", rs.torn)
	}
	q.log.Info("queue: opened", "dir", q.dir, "messages", len(q.msgs), "segments", len(q.segs))
	return nil
}

type replayState struct {
	maxID      string
	deadBodies map[string]bool // external bodies of messages found done
	torn       int
}

func (rs *replayState) seen(id string) {
	if id > rs.maxID {
		rs.maxID = id
	}
}

// replaySegment applies the valid records of one segment and returns the
// length of its valid prefix. It stops at the first record that is short or
// fails its CRC: records are only ever appended, and a new process never
// appends to an old segment, so only a segment's tail can be torn. It never
// looks for records past that point, since an inline body could be made
// to look like one.
func (q *Queue) replaySegment(seq uint64, rs *replayState) (int64, error) {
	f, err := q.fs.OpenFile(q.segPath(seq), os.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	fileSize := st.Size()
	br := bufio.NewReaderSize(f, 256<<10)
	hdr := make([]byte, segHeaderLen)
	if _, err := io.ReadFull(br, hdr); err != nil {
		if isShort(err) {
			return 0, nil // created, never completed: nothing acknowledged
		}
		return 0, err
	}
	if string(hdr) != string(segmentHeader(seq)) {
		q.log.Error("queue: not a journal segment of this queue, ignored", "segment", seq)
		return 0, nil
	}
	off := int64(segHeaderLen)
	h := crc32.New(castagnoli)
	seqb := binary.LittleEndian.AppendUint64(nil, seq)
	end := false // reached the preallocated, never written part
	for {
		var rh [recHeaderLen]byte
		if _, err := io.ReadFull(br, rh[:]); err != nil {
			if isShort(err) {
				break
			}
			return off, err
		}
		if rh == ([recHeaderLen]byte{}) {
			// No record is all zeros (there is no type 0): this is
			// where the writes ended in a preallocated segment.
			end = true
			break
		}
		typ := rh[4]
		metaLen := int64(binary.LittleEndian.Uint32(rh[5:]))
		bodyLen := int64(binary.LittleEndian.Uint32(rh[9:]))
		if metaLen > maxMetaLen || bodyLen > maxBodyLen || off+recHeaderLen+metaLen+bodyLen > fileSize {
			break
		}
		meta := make([]byte, metaLen)
		if _, err := io.ReadFull(br, meta); err != nil {
			if isShort(err) {
				break
			}
			return off, err
		}
		h.Reset()
		h.Write(rh[4:])
		h.Write(meta)
		if _, err := io.CopyN(h, br, bodyLen); err != nil {
			if isShort(err) {
				break
			}
			return off, err
		}
		h.Write(seqb)
		if h.Sum32() != binary.LittleEndian.Uint32(rh[:]) {
			break
		}
		q.applyRecord(rs, typ, meta, seq, off, recHeaderLen+metaLen, bodyLen)
		off += recHeaderLen + metaLen + bodyLen
	}
	if off < fileSize && !end {
		rs.torn++
		q.log.Warn("queue: journal segment has a torn tail", "segment", seq, "valid", off, "size", fileSize)
	}
	return off, nil
}

func isShort(err error) bool {
	return err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF)
}

// applyRecord applies one valid record during replay. A record that names
// an unknown ID belongs to a message that is done and whose earlier records
// were already deleted: it is ignored.
func (q *Queue) applyRecord(rs *replayState, typ byte, meta []byte, seq uint64, off, head, bodyLen int64) {
	n := head + bodyLen
	switch typ {
	case recMessage:
		mm, err := decodeMessage(meta)
		if err != nil || !mm.body.external && mm.body.size != bodyLen {
			q.log.Error("queue: malformed message record ignored", "segment", seq, "offset", off)
			return
		}
		rs.seen(mm.id)
		if q.msgs.get(mm.id) != nil {
			q.log.Error("queue: duplicate message record ignored", "id", mm.id, "segment", seq)
			return
		}
		m := &message{id: mm.id, received: mm.received, sender: mm.sender, body: mm.body,
			rcpts: make([]rcpt, len(mm.rcpts))}
		if !m.body.external {
			m.body.seq, m.body.off = seq, off+head
		}
		for i, a := range mm.rcpts {
			m.rcpts[i] = rcpt{addr: a, next: mm.received, dest: q.opt.DestinationOf(mm.sender, a)}
		}
		m.segs = []segUse{{seq: seq, bytes: n}}
		q.msgs.put(m)
	case recSnapshot:
		m, err := decodeSnapshot(meta)
		if err != nil || !m.body.external && m.body.size != bodyLen {
			q.log.Error("queue: malformed snapshot record ignored", "segment", seq, "offset", off)
			return
		}
		rs.seen(m.id)
		if !m.body.external {
			m.body.seq, m.body.off = seq, off+head
		}
		m.segs = []segUse{{seq: seq, bytes: n}}
		q.msgs.put(m)
	case recUpdate:
		id, ups, err := decodeUpdate(meta)
		if err != nil {
			q.log.Error("queue: malformed update record ignored", "segment", seq, "offset", off)
			return
		}
		m := q.msgs.get(id)
		if m == nil {
			return
		}
		for i := range ups {
			if ups[i].idx < len(m.rcpts) {
				m.rcpts[ups[i].idx].apply(&ups[i], q.opt.MaxHistory)
			}
		}
		addUse(m, seq, n)
		if m.done() {
			q.dropReplay(rs, m)
		}
	case recFlags:
		id, fl, err := decodeFlags(meta)
		if err != nil {
			return
		}
		if m := q.msgs.get(id); m != nil {
			m.setFlags(fl)
			addUse(m, seq, n)
		}
	case recRemove:
		id, err := decodeRemove(meta)
		if err != nil {
			return
		}
		if m := q.msgs.get(id); m != nil {
			q.dropReplay(rs, m)
		}
	default:
		q.log.Warn("queue: unknown journal record type ignored", "type", string(typ), "segment", seq)
	}
}

func (q *Queue) dropReplay(rs *replayState, m *message) {
	q.msgs.drop(m.id)
	if m.body.external {
		rs.deadBodies[m.id] = true
	}
}

// addUse is useLocked without segment accounting (replay computes it last).
func addUse(m *message, seq uint64, n int64) {
	if k := len(m.segs); k > 0 && m.segs[k-1].seq == seq {
		m.segs[k-1].bytes += n
		return
	}
	m.segs = append(m.segs, segUse{seq: seq, bytes: n})
}
