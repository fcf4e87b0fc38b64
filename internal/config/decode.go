package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// decodeStrict decodes data into c. The TOML syntax is checked first (a
// syntax error stops there: nothing after it can be read reliably); then
// every key is matched against the configuration's fields and every value
// converted, and all the errors found are returned together, each with its
// line, in TOML's terms ("want an integer number of bytes, got the string
// \"lots\""), never the decoder's Go ones.
func decodeStrict(name string, data []byte, c *Config) error {
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, _ := de.Position()
			return Errors{{File: name, Line: row, Msg: "TOML syntax: " + strings.TrimPrefix(de.Error(), "toml: ")}}
		}
		return Errors{{File: name, Msg: "TOML syntax: " + strings.TrimPrefix(err.Error(), "toml: ")}}
	}
	d := &decoder{lines: keyLines(data)}
	d.table(reflect.ValueOf(c).Elem(), doc, "")
	for _, e := range d.errs {
		e.File = name
	}
	if len(d.errs) > 0 {
		return d.errs
	}
	return nil
}

// decoder walks a decoded TOML document beside a struct.
type decoder struct {
	lines map[string]int
	errs  Errors
}

func (d *decoder) bad(key, format string, args ...any) {
	d.errs = append(d.errs, &Error{Key: key, Line: d.line(key), Msg: fmt.Sprintf(format, args...)})
}

// line finds the line of key, or of its nearest enclosing key.
func (d *decoder) line(key string) int {
	for k := key; k != ""; {
		if l, ok := d.lines[k]; ok {
			return l
		}
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
	return 0
}

// fieldsOf maps the TOML keys of a struct type to field index paths,
// embedded structs (ListenLimit) promoted as the TOML library does.
func fieldsOf(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("toml")
		if tag == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && tag == "" {
			for k, idx := range fieldsOf(f.Type) {
				out[k] = append([]int{i}, idx...)
			}
			continue
		}
		out[tag] = []int{i}
	}
	return out
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func (d *decoder) table(v reflect.Value, m map[string]any, prefix string) {
	fields := fieldsOf(v.Type())
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		li, lj := d.line(join(prefix, keys[i])), d.line(join(prefix, keys[j]))
		if li != lj {
			return li < lj
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		key := join(prefix, k)
		idx, ok := fields[k]
		if !ok {
			names := make([]string, 0, len(fields))
			for n := range fields {
				names = append(names, n)
			}
			if s := nearest(k, names); s != "" {
				d.bad(key, "unknown key (did you mean `%s`?)", s)
			} else {
				d.bad(key, "unknown key")
			}
			continue
		}
		d.value(v.FieldByIndex(idx), m[k], key)
	}
}

var durationType = reflect.TypeOf(Duration(0))

func (d *decoder) value(v reflect.Value, x any, key string) {
	if v.Kind() == reflect.Pointer {
		p := reflect.New(v.Type().Elem())
		d.value(p.Elem(), x, key)
		v.Set(p)
		return
	}
	if v.Type() == durationType {
		s, ok := x.(string)
		if !ok {
			d.bad(key, "want a duration such as \"30s\", \"5m\", \"4h\" or \"7d\", got %s", describe(x))
			return
		}
		dur, err := ParseDuration(s)
		if err != nil {
			d.bad(key, "%v", err)
			return
		}
		v.SetInt(int64(dur))
		return
	}
	switch v.Kind() {
	case reflect.String:
		s, ok := x.(string)
		if !ok {
			d.bad(key, "want a string, got %s", describe(x))
			return
		}
		v.SetString(s)
	case reflect.Bool:
		b, ok := x.(bool)
		if !ok {
			d.bad(key, "want true or false, got %s", describe(x))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, ok := x.(int64)
		if !ok {
			what := "an integer"
			if strings.HasSuffix(key, "_bytes") {
				what = "an integer number of bytes"
			}
			d.bad(key, "want %s, got %s", what, describe(x))
			return
		}
		if v.OverflowInt(n) {
			d.bad(key, "%d is too large", n)
			return
		}
		v.SetInt(n)
	case reflect.Struct:
		m, ok := x.(map[string]any)
		if !ok {
			d.bad(key, "want a table ([%s]), got %s", key, describe(x))
			return
		}
		d.table(v, m, key)
	case reflect.Slice:
		list, ok := x.([]any)
		if !ok {
			if v.Type().Elem().Kind() == reflect.Struct {
				d.bad(key, "want tables ([[%s]]), got %s", key, describe(x))
			} else {
				d.bad(key, "want a list such as [\"a\", \"b\"], got %s", describe(x))
			}
			return
		}
		s := reflect.MakeSlice(v.Type(), len(list), len(list))
		for i, e := range list {
			d.value(s.Index(i), e, key+"["+strconv.Itoa(i)+"]")
		}
		v.Set(s)
	case reflect.Map:
		m, ok := x.(map[string]any)
		if !ok {
			d.bad(key, "want a table such as { name = ... }, got %s", describe(x))
			return
		}
		out := reflect.MakeMapWithSize(v.Type(), len(m))
		for k, e := range m {
			ev := reflect.New(v.Type().Elem()).Elem()
			d.value(ev, e, key+"."+k)
			out.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), ev)
		}
		v.Set(out)
	case reflect.Interface:
		// A key of more than one shape (route.via: a URL or a list of
		// them), checked by validate.
		if x != nil {
			v.Set(reflect.ValueOf(x))
		}
	default:
		d.bad(key, "cannot be set from TOML")
	}
}

// describe names a TOML value in TOML's terms.
func describe(x any) string {
	switch x := x.(type) {
	case string:
		if len(x) > 40 {
			x = x[:40] + "..."
		}
		return "the string " + strconv.Quote(x)
	case int64:
		return "the integer " + strconv.FormatInt(x, 10)
	case float64:
		return "the number " + strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return "the boolean " + strconv.FormatBool(x)
	case []any:
		return "a list"
	case map[string]any:
		return "a table"
	}
	return "a date or time"
}

// ParseDuration reads a duration as Go writes them ("90s", "5m", "1h30m")
// and also with days ("7d", "1d12h"), the unit queue lifetimes are thought in.
func ParseDuration(s string) (time.Duration, error) {
	in := s
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseUint(s[:i], 10, 16)
		if err == nil {
			days = time.Duration(n) * 24 * time.Hour
			s = s[i+1:]
		}
	}
	var rest time.Duration
	if s != "" || days == 0 {
		v, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration (want forms like \"30s\", \"5m\", \"4h\", \"7d\")", in)
		}
		rest = v
	}
	if rest < 0 {
		return 0, fmt.Errorf("%q: a duration must not be negative", in)
	}
	return days + rest, nil
}

// nearest returns the name closest to key if it is close enough to be a
// likely typo, else "".
func nearest(key string, names []string) string {
	best, bestDist := "", len(key)/3+2
	sort.Strings(names)
	for _, n := range names {
		if dist := editDistance(key, n); dist < bestDist {
			best, bestDist = n, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// locate fills in File and Line of validation errors by finding each error's
// key in the document. Keys look like "qmtp.relay_clients[1]" or
// "route[2].via"; array indexes inside a value are ignored (the line of the
// key is close enough), indexes of [[tables]] pick the table.
func locate(name string, data []byte, errs Errors) {
	d := &decoder{lines: keyLines(data)}
	for _, e := range errs {
		e.File = name
		if e.Line == 0 && e.Key != "" {
			e.Line = d.line(e.Key)
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
	enc := toml.NewEncoder(&b)
	enc.SetIndentTables(true)
	if err := enc.Encode(c.shown()); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// shown is c as printed: secrets hidden.
func (c *Config) shown() *Config {
	shown := *c
	shown.Routes = append([]Route(nil), c.Routes...)
	for i := range shown.Routes {
		if shown.Routes[i].Password != "" {
			shown.Routes[i].Password = "(hidden)"
		}
	}
	return &shown
}
