package config

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"unicode"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/qmgate/qmgate/docs/man"
)

// keyDoc is the one-line description of every key, defaults included, as
// `qmgate config print -doc` shows it: the first sentence of the key's entry
// in qmgate.toml(5) and its default, read from the page itself, so that the
// reference is written once.
var keyDoc = sync.OnceValue(func() map[string]string { return readReference(man.ConfigReference) })

var (
	// A term names one or more keys: "`qmqp.max_conns`, `qmtp.max_conns`".
	refTermRe = regexp.MustCompile("^`[a-z0-9_.]+`(, `[a-z0-9_.]+`)*$")
	refKeyRe  = regexp.MustCompile("`([a-z0-9_.]+)`")
	refDefRe  = regexp.MustCompile(`Default: (.+?)\. Change:`)
	// The first sentence ends at a full stop before a capital or the end.
	refSentenceRe = regexp.MustCompile(`^(.+?)\.(\s+[A-Z*]|$)`)
	refMarkupRe   = regexp.MustCompile(`\*\*|\\|\*([^*\s"][^*]*)\*|` + "`")
)

// readReference reads the page's definition lists: a term naming keys, the
// line ":   Type: T. Default: D. Change: C.", then the description.
func readReference(page string) map[string]string {
	docs := map[string]string{}
	lines := strings.Split(page, "\n")
	for i := 0; i+3 < len(lines); i++ {
		def := refDefRe.FindStringSubmatch(lines[i+1])
		if !refTermRe.MatchString(lines[i]) || def == nil {
			continue
		}
		var para []string
		for _, l := range lines[i+3:] {
			if strings.TrimSpace(l) == "" {
				break
			}
			para = append(para, strings.TrimSpace(l))
		}
		text := refMarkupRe.ReplaceAllString(strings.Join(para, " "), "$1")
		if m := refSentenceRe.FindStringSubmatch(text); m != nil {
			text = m[1]
		}
		if len(text) > 1 && !unicode.IsUpper(rune(text[1])) {
			text = strings.ToLower(text[:1]) + text[1:] // not STARTTLS's S
		}
		text += " (default: " + refMarkupRe.ReplaceAllString(def[1], "$1") + ")"
		for _, k := range refKeyRe.FindAllStringSubmatch(lines[i], -1) {
			docs[k[1]] = text
		}
	}
	return docs
}

// Keys returns every configuration key in file order, dotted ("queue_dir",
// "qmtp.listen", "route.via"); the listeners' own limit keys are included
// (qmtp.max_conns).
func Keys() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("toml")
			if tag == "-" || !f.IsExported() {
				continue
			}
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if f.Anonymous && tag == "" {
				walk(ft, prefix)
				continue
			}
			key := join(prefix, tag)
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != durationType {
				walk(ft, key)
				continue
			}
			out = append(out, key)
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	return out
}

// KeyDoc returns the one-line description of a key as Keys names it.
func KeyDoc(key string) string { return keyDoc()[key] }

// WriteDoc writes one line per key: the key and its description.
func WriteDoc(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, k := range Keys() {
		fmt.Fprintf(tw, "%s\t%s\n", k, KeyDoc(k))
	}
	return tw.Flush()
}

// PrintSet writes, as TOML, only the keys the file sets, with their values
// (like postconf -n): what this configuration changes from the defaults.
func (c *Config) PrintSet() ([]byte, error) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(c.shown()); err != nil {
		return nil, err
	}
	var all map[string]any
	if err := toml.Unmarshal(buf.Bytes(), &all); err != nil {
		return nil, err
	}
	set := keepSet(all, "", c.lines)
	var b bytes.Buffer
	fmt.Fprintf(&b, "# settings made in %s (qmgate config print shows every effective value)\n", c.Source)
	if len(set) == 0 {
		return b.Bytes(), nil
	}
	enc := toml.NewEncoder(&b)
	enc.SetIndentTables(true)
	if err := enc.Encode(set); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// keepSet returns the part of m whose keys appear in lines.
func keepSet(m map[string]any, prefix string, lines map[string]int) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		key := join(prefix, k)
		switch v := v.(type) {
		case map[string]any:
			if sub := keepSet(v, key, lines); len(sub) > 0 {
				out[k] = sub
			} else if _, ok := lines[key]; ok && !hasChild(lines, key) {
				out[k] = v
			}
			continue
		case []any:
			if len(v) > 0 {
				if _, ok := v[0].(map[string]any); ok {
					var tables []any
					for i, e := range v {
						tables = append(tables, keepSet(e.(map[string]any), key+"["+strconv.Itoa(i)+"]", lines))
					}
					out[k] = tables
					continue
				}
			}
		}
		if _, ok := lines[key]; ok {
			out[k] = v
		}
	}
	return out
}

func hasChild(lines map[string]int, key string) bool {
	for k := range lines {
		if strings.HasPrefix(k, key+".") || strings.HasPrefix(k, key+"[") {
			return true
		}
	}
	return false
}
