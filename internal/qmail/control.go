package qmail

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// MaxControlBytes bounds the size of a control file read here. rcpthosts and
// smtproutes on big installations hold some thousands of lines; a file of
// 16 MiB is a mistake, not a configuration.
const MaxControlBytes = 16 << 20

// readControl reads a whole control file, bounded by MaxControlBytes.
func readControl(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxControlBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxControlBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxControlBytes)
	}
	return data, nil
}

// trimTrailing strips trailing white space as qmail's control.c does (space
// and tab), and a CR as well, so a file edited on another system still reads
// the same.
func trimTrailing(s string) string {
	return strings.TrimRight(s, " \t\r")
}

// ParseControlLines splits the text of a list control file (rcpthosts,
// smtproutes, qmqpservers...) into its entries: trailing white space is
// stripped, and lines that are then empty or start with '#' are skipped
// (qmail's control_readfile).
func ParseControlLines(data []byte) []string {
	var out []string
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		s := trimTrailing(string(line))
		if s == "" || s[0] == '#' {
			continue
		}
		out = append(out, s)
	}
	return out
}

// ReadControlLines reads a list control file. A missing file is an error
// that satisfies errors.Is(err, fs.ErrNotExist): for several files (rcpthosts
// above all) a missing file means something different from an empty one.
func ReadControlLines(path string) ([]string, error) {
	data, err := readControl(path)
	if err != nil {
		return nil, err
	}
	return ParseControlLines(data), nil
}

// ReadControlLine reads a one-line control file (me, defaultdomain,
// databytes...) as qmail's control_readline does: the first line with its
// trailing white space stripped. Comments are not special here, as in qmail.
func ReadControlLine(path string) (string, error) {
	data, err := readControl(path)
	if err != nil {
		return "", err
	}
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		data = data[:i]
	}
	return trimTrailing(string(data)), nil
}

// ReadControlInt reads a one-line control file holding a non-negative
// decimal number. Anything else in the line is an error, as qmail's
// control_readint makes it ("unable to read controls").
func ReadControlInt(path string) (int64, error) {
	s, err := ReadControlLine(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%s: %q is not a non-negative number", path, s)
	}
	return v, nil
}
