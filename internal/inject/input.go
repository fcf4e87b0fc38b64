package inject

import (
	"bufio"
	"bytes"
	"io"
)

// input reads what a program pipes into sendmail, one piece at a time (a
// whole line, or as much of a long line as the buffer holds), with CR LF
// line ends turned into LF, and stops at a line holding a single "." unless
// dots are ignored (-i).
//
// Why convert: the stored and relayed form of a message is LF-only (QMQP,
// qmail's queue), and programs hand sendmail CR LF more often than not (PHP
// 8 writes the header with CR LF). A CR that does not end a line is kept.
type input struct {
	br      *bufio.Reader
	dots    bool // a line "." ends the message
	lineBeg bool // the next piece starts a line
	heldCR  bool // a piece ended in CR; keep it unless LF follows
	done    bool
	buf     []byte
}

func newInput(r io.Reader, dots bool) *input {
	return &input{br: bufio.NewReaderSize(r, 64<<10), dots: dots, lineBeg: true}
}

// next returns the next piece, valid until the following call, and whether
// it begins a line. At the end it returns io.EOF (other errors as they
// come).
func (in *input) next() (piece []byte, begins bool, err error) {
	if in.done {
		return nil, false, io.EOF
	}
	begins = in.lineBeg
	raw, err := in.br.ReadSlice('\n')
	if err != nil && err != bufio.ErrBufferFull && err != io.EOF {
		return nil, false, err
	}
	full := err == nil // raw ends in LF
	in.buf = in.buf[:0]
	if in.heldCR {
		in.heldCR = false
		if !(len(raw) > 0 && raw[0] == '\n') {
			in.buf = append(in.buf, '\r')
		}
	}
	in.buf = append(in.buf, raw...)
	p := in.buf
	switch {
	case full && bytes.HasSuffix(p, []byte("\r\n")):
		p = append(p[:len(p)-2], '\n')
	case !full && err == bufio.ErrBufferFull && len(p) > 0 && p[len(p)-1] == '\r':
		p, in.heldCR = p[:len(p)-1], true
	}
	in.lineBeg = full
	if err == io.EOF {
		in.done = true
		if len(p) == 0 {
			return nil, false, io.EOF
		}
		if p[len(p)-1] == '\r' {
			// A CR that ends the input is a line end cut short; the
			// newline added at the end must not make it a CR LF.
			p[len(p)-1] = '\n'
		}
	}
	if in.dots && begins && full && len(p) == 2 && p[0] == '.' {
		in.done = true
		return nil, false, io.EOF
	}
	return p, begins, nil
}
