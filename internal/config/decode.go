package config

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// decodeStrict decodes data into c, refusing unknown keys, and turns the
// library's errors into *Error values with line numbers.
func decodeStrict(name string, data []byte, c *Config) error {
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(c)
	if err == nil {
		return nil
	}
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var errs Errors
		for i := range strict.Errors {
			de := &strict.Errors[i]
			row, _ := de.Position()
			errs = append(errs, &Error{File: name, Line: row, Key: strings.Join(de.Key(), "."), Msg: "unknown key"})
		}
		return errs
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		msg := de.Error()
		if i := strings.Index(msg, "toml: "); i == 0 {
			msg = msg[len("toml: "):]
		}
		return Errors{{File: name, Line: row, Key: strings.Join(de.Key(), "."), Msg: msg}}
	}
	return Errors{{File: name, Msg: strings.TrimPrefix(err.Error(), "toml: ")}}
}

// locate fills in File and Line of validation errors by finding each error's
// key in the document. Keys look like "qmtp.relay_clients[1]" or
// "route[2].via"; array indexes inside a value are ignored (the line of the
// key is close enough), indexes of [[tables]] pick the table.
func locate(name string, data []byte, errs Errors) {
	lines := keyLines(data)
	for _, e := range errs {
		e.File = name
		if e.Line != 0 || e.Key == "" {
			continue
		}
		k := e.Key
		for k != "" {
			if l, ok := lines[k]; ok {
				e.Line = l
				break
			}
			// Drop a trailing [n] index, then a trailing .part.
			if strings.HasSuffix(k, "]") {
				k = k[:strings.LastIndexByte(k, '[')]
				continue
			}
			i := strings.LastIndexByte(k, '.')
			if i < 0 {
				break
			}
			k = k[:i]
		}
	}
}

// keyLines maps every key path in the document to its line: "hostname",
// "qmtp", "qmtp.listen", "route[0]", "route[0].via".
func keyLines(data []byte) map[string]int {
	out := map[string]int{}
	p := &unstable.Parser{}
	p.Reset(data)
	arrayCount := map[string]int{}
	prefix := ""
	for p.NextExpression() {
		n := p.Expression()
		switch n.Kind {
		case unstable.Table, unstable.ArrayTable:
			key := joinKey(n.Key())
			line := lineOf(p, n)
			if n.Kind == unstable.ArrayTable {
				idx := arrayCount[key]
				arrayCount[key] = idx + 1
				key = key + "[" + strconv.Itoa(idx) + "]"
			}
			prefix = key
			if _, ok := out[key]; !ok {
				out[key] = line
			}
		case unstable.KeyValue:
			key := joinKey(n.Key())
			if prefix != "" {
				key = prefix + "." + key
			}
			out[key] = lineOf(p, n)
		}
	}
	return out
}

func joinKey(it unstable.Iterator) string {
	var parts []string
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return strings.Join(parts, ".")
}

// lineOf finds the line of a node through its first key part (the node itself
// may have no raw range).
func lineOf(p *unstable.Parser, n *unstable.Node) (line int) {
	defer func() {
		if recover() != nil {
			line = 0
		}
	}()
	it := n.Key()
	for it.Next() {
		k := it.Node()
		if k.Raw.Length > 0 {
			return p.Shape(k.Raw).Start.Line
		}
	}
	return 0
}

// Print writes the effective configuration as TOML, defaults included.
func (c *Config) Print() ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# effective configuration from %s\n", c.Source)
	shown := *c
	shown.Routes = append([]Route(nil), c.Routes...)
	for i := range shown.Routes {
		if shown.Routes[i].Password != "" {
			shown.Routes[i].Password = "(hidden)"
		}
	}
	enc := toml.NewEncoder(&b)
	enc.SetIndentTables(true)
	if err := enc.Encode(&shown); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
