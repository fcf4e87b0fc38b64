package config_test

import (
	"bufio"
	"encoding"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/queue"
	"github.com/qmgate/qmgate/relay/transport"
)

// referencePage is qmgate.toml(5)'s source: the reference administrators read.
const referencePage = "../../docs/man/qmgate.toml.5.md"

// computed are the keys whose default is not a constant but follows from
// another setting or from the machine; the page says so in words.
var computed = map[string]bool{
	"hostname":       true,
	"default_domain": true,
	"postmaster":     true,
	// Each listener's limits default to [limits].
	"route.concurrency": true,
	// Named after the route's first domain and transport.
	"route.name": true,
}

func init() {
	for _, l := range []string{"qmqp", "qmtp", "smtp"} {
		for _, k := range []string{"max_conns", "max_conns_per_ip", "read_timeout", "write_timeout", "session_timeout", "first_timeout", "min_data_rate", "max_unix_conns"} {
			computed[l+"."+k] = true
		}
	}
}

// zeroMeansElsewhere are keys the configuration leaves at zero for the
// component that reads them to default; the value that component uses.
var zeroMeansElsewhere = map[string]any{
	"queue.min_free_bytes":             int64(queue.DefaultMinFreeBytes),
	"route.max_new_mailboxes_per_hour": transport.DefaultMaxNewMailboxesPerHour,
}

// docKey is one key as qmgate.toml(5) documents it.
type docKey struct {
	line                      int
	typ, def, change, example string
	literal                   bool // the default is a `literal`
	required                  bool
}

var (
	termRe    = regexp.MustCompile("^`[a-z0-9_.]+`(, `[a-z0-9_.]+`)*$")
	termKeyRe = regexp.MustCompile("`([a-z0-9_.]+)`")
	defRe     = regexp.MustCompile("^:   Type: (.+?)\\. Default: (`[^`]*`|[^`]+?)\\. Change: (.+?)\\.$")
	exampleRe = regexp.MustCompile("^    Example: `[^`]+`")
)

// readReference parses the page's definition lists: a term line naming one
// or more keys in backquotes, then ":   Type: T. Default: D. Change: C.",
// a description, and an "Example:" line.
func readReference(t *testing.T) map[string]*docKey {
	t.Helper()
	f, err := os.Open(referencePage)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string]*docKey{}
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	for i := 0; i+1 < len(lines); i++ {
		if !termRe.MatchString(lines[i]) || !strings.HasPrefix(lines[i+1], ":") {
			continue
		}
		m := defRe.FindStringSubmatch(lines[i+1])
		if m == nil {
			t.Errorf("%s:%d: want \":   Type: T. Default: D. Change: C.\" after the key, got %q", referencePage, i+2, lines[i+1])
			continue
		}
		d := &docKey{line: i + 1, typ: m[1], def: m[2], change: m[3]}
		if strings.HasPrefix(d.def, "`") {
			d.literal = true
			d.def = strings.Trim(d.def, "`")
		}
		d.required = strings.Contains(d.def, "required")
		for j := i + 2; j < len(lines) && !termRe.MatchString(lines[j]) && !strings.HasPrefix(lines[j], "#"); j++ {
			if exampleRe.MatchString(lines[j]) {
				d.example = lines[j]
				break
			}
		}
		if d.example == "" {
			t.Errorf("%s:%d: %s has no \"    Example: `...`\" line", referencePage, i+1, lines[i])
		}
		if !strings.HasPrefix(d.change, "reload") && !strings.HasPrefix(d.change, "restart") && !strings.HasPrefix(d.change, "at once") {
			t.Errorf("%s:%d: Change: %q: want reload, restart or at once", referencePage, i+2, d.change)
		}
		for _, km := range termKeyRe.FindAllStringSubmatch(lines[i], -1) {
			if _, dup := keys[km[1]]; dup {
				t.Errorf("%s:%d: %s documented twice", referencePage, i+1, km[1])
			}
			keys[km[1]] = d
		}
	}
	if len(keys) == 0 {
		t.Fatalf("%s: no keys found", referencePage)
	}
	return keys
}

// codeKey is one key of the configuration structure, with the value Parse
// gives it when the file does not set it.
type codeKey struct {
	value reflect.Value
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// walk lists every TOML key of the structure v under prefix. An array of
// tables ([[route]]) lists its element's keys as route.KEY.
func walk(prefix string, v reflect.Value, out map[string]codeKey) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "-" {
			continue
		}
		fv := v.Field(i)
		if f.Anonymous && name == "" {
			walk(prefix, fv, out) // embedded: its keys sit in this table
			continue
		}
		if name == "" {
			name = f.Name
		}
		key := prefix + name
		ft := f.Type
		if ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct && !ft.Implements(textUnmarshaler) {
			if fv.IsNil() {
				fv = reflect.New(ft.Elem())
			}
			walk(key+".", fv.Elem(), out)
			continue
		}
		if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(textUnmarshaler) {
			walk(key+".", fv, out)
			continue
		}
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			el := reflect.New(ft.Elem()).Elem()
			if fv.Len() > 0 {
				el = fv.Index(0)
			}
			walk(key+".", el, out)
			continue
		}
		out[key] = codeKey{value: fv}
	}
}

// defaults parses a file that sets nothing but one route (so that the
// route's own defaults show) and lists every key with its value.
func defaults(t *testing.T) map[string]codeKey {
	t.Helper()
	c, err := config.Parse("defaults", []byte("[[route]]\ndomains = [\"*\"]\nvia = \"discard:\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]codeKey{}
	walk("", reflect.ValueOf(c).Elem(), out)
	return out
}

// docValue decodes the page's literal default into a value of the key's
// type, as a TOML file would give it.
func docValue(def string, typ reflect.Type) (reflect.Value, error) {
	base := typ
	if base.Kind() == reflect.Pointer {
		base = base.Elem()
	}
	lit := def
	if base.Kind() == reflect.String || reflect.PointerTo(base).Implements(textUnmarshaler) {
		lit = strconv.Quote(def)
	}
	holder := reflect.New(reflect.StructOf([]reflect.StructField{{
		Name: "V", Type: base, Tag: `toml:"v"`,
	}}))
	if err := toml.Unmarshal([]byte("v = "+lit), holder.Interface()); err != nil {
		return reflect.Value{}, err
	}
	return holder.Elem().Field(0), nil
}

// show renders a value as a person would write it in the file.
func show(v reflect.Value) string {
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		b, err := m.MarshalText()
		if err == nil {
			return string(b)
		}
	}
	return fmt.Sprint(v.Interface())
}

func deref(v reflect.Value) reflect.Value {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return reflect.Zero(v.Type().Elem())
		}
		return v.Elem()
	}
	return v
}

// TestReferenceDocumentsEveryKey: every key of the configuration structure
// is in qmgate.toml(5), with the default the code gives it; the page names
// no key the code does not have.
func TestReferenceDocumentsEveryKey(t *testing.T) {
	doc := readReference(t)
	code := defaults(t)

	var names []string
	for k := range code {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		d, ok := doc[k]
		if !ok {
			t.Errorf("%s is a configuration key but %s does not document it: add\n\n`%s`\n:   Type: TYPE. Default: `%v`. Change: reload|restart.\n\n    What it does.\n\n    Example: `%s = ...`\n",
				k, referencePage, k, deref(code[k].value).Interface(), k[strings.LastIndexByte(k, '.')+1:])
			continue
		}
		got := deref(code[k].value)
		if want, ok := zeroMeansElsewhere[k]; ok && got.IsZero() {
			got = reflect.ValueOf(want)
		}
		switch {
		case d.required:
			// Set in every route; there is no default to compare.
		case computed[k]:
			if d.literal {
				t.Errorf("%s:%d: %s: the default follows from another setting; say which in words, not as a literal", referencePage, d.line, k)
			}
		case !d.literal:
			if !got.IsZero() {
				t.Errorf("%s:%d: %s: documented default %q, but the code's default is %v", referencePage, d.line, k, d.def, got.Interface())
			}
		default:
			want, err := docValue(d.def, code[k].value.Type())
			if err != nil {
				t.Errorf("%s:%d: %s: default `%s` is not a valid value: %v", referencePage, d.line, k, d.def, err)
				continue
			}
			if show(want) != show(got) {
				t.Errorf("%s:%d: %s: documented default `%s`, but the code's default is %s", referencePage, d.line, k, d.def, show(got))
			}
		}
	}
	for k, d := range doc {
		if _, ok := code[k]; !ok {
			t.Errorf("%s:%d: documents %s, which is not a configuration key", referencePage, d.line, k)
		}
	}
}

// TestReferenceExamplesLoad: every key's example line, put in its table,
// loads.
func TestReferenceExamplesLoad(t *testing.T) {
	doc := readReference(t)
	for k, d := range doc {
		ex := strings.TrimPrefix(exampleRe.FindString(d.example), "    Example: `")
		ex = strings.TrimSuffix(ex, "`")
		table, name := "", k
		if i := strings.LastIndexByte(k, '.'); i >= 0 {
			table, name = k[:i], k[i+1:]
		}
		if !strings.HasPrefix(ex, name+" = ") {
			t.Errorf("%s:%d: %s: example %q does not set %s", referencePage, d.line, k, ex, name)
			continue
		}
		var b strings.Builder
		switch table {
		case "":
			b.WriteString(ex + "\n")
		case "route":
			// Keys of local delivery need a maildir route of an exact domain.
			dom, via := "*", "smtp://smarthost.example.net"
			if localRouteKeys[k] {
				dom, via = "example.net", "maildir:/var/lib/qmgate/maildir"
			}
			b.WriteString("[[route]]\n")
			if name != "domains" {
				b.WriteString("domains = [\"" + dom + "\"]\n")
			}
			if name != "via" {
				b.WriteString("via = \"" + via + "\"\n")
			}
			b.WriteString(ex + "\n")
		case "dkim":
			b.WriteString("[[dkim]]\n")
			for _, kv := range []string{`domain = "example.net"`, `selector = "2026a"`, `key_file = "/etc/qmgate/dkim/2026a.key"`} {
				if !strings.HasPrefix(kv, name+" = ") {
					b.WriteString(kv + "\n")
				}
			}
			b.WriteString(ex + "\n")
		case "rewrite.hosts", "rewrite.users":
			b.WriteString("[[" + table + "]]\n" + ex + "\n")
		default:
			b.WriteString("[" + table + "]\n" + ex + "\n")
		}
		// Keys that only make sense together get their partner.
		switch k {
		case "qmtp.listen_tls", "qmtp.tls_cert", "qmtp.tls_key":
			b.WriteString("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n")
		case "smtp.tls_cert", "smtp.tls_key":
			b.WriteString("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n")
		case "smtp.submission", "smtp.submissions":
			b.WriteString("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nauth_file = \"passwd\"\n")
		case "rewrite.hosts.match":
			b.WriteString(`domain = "example.net"` + "\n")
		case "rewrite.hosts.domain":
			b.WriteString(`match = "*.internal"` + "\n")
		case "rewrite.users.match":
			b.WriteString(`address = "ops@example.net"` + "\n")
		case "rewrite.users.address":
			b.WriteString(`match = "root@*"` + "\n")
		case "rewrite.admin.address":
			b.WriteString(`hosts = ["*.internal"]` + "\n")
		case "route.srs_domain":
			b.WriteString("srs_secret_file = \"srs.secret\"\n")
		case "user":
			continue // names a user this machine may not have
		}
		switch {
		case k == "route.cert_file" || k == "shutdown.cert_file":
			b.WriteString("key_file = \"k.pem\"\n")
		case k == "route.key_file" || k == "shutdown.key_file":
			b.WriteString("cert_file = \"c.pem\"\n")
		case k == "route.fallback" || k == "route.fallback_on":
			// An mx route and the smarthost route it falls back to.
			fb := "[[route]]\nname = \"relay\"\ndomains = [\"relay.invalid\"]\nvia = \"smtp://smarthost.example.net\"\n" +
				"[[route]]\ndomains = [\"*\"]\nvia = \"mx\"\n" + ex + "\n"
			if k == "route.fallback_on" {
				fb += "fallback = \"relay\"\n"
			}
			if _, err := config.Parse(k+" example", []byte(fb)); err != nil {
				t.Errorf("%s:%d: %s: example does not load: %v\n%s", referencePage, d.line, k, err, fb)
			}
			continue
		case strings.HasPrefix(k, "route.oauth2."):
			// An smtp route with the required OAuth2 settings, the
			// example's line replacing its own.
			lines := map[string]string{"token_url": `token_url = "https://login.example.net/token"`,
				"client_id": `client_id = "app"`, "client_secret_file": `client_secret_file = "secret"`}
			lines[name] = ex
			oa := "[[route]]\ndomains = [\"*\"]\nvia = \"smtp://smarthost.example.net\"\nusername = \"relay@example.net\"\n[route.oauth2]\n"
			for _, l := range lines {
				oa += l + "\n"
			}
			if _, err := config.Parse(k+" example", []byte(oa)); err != nil {
				t.Errorf("%s:%d: %s: example does not load: %v\n%s", referencePage, d.line, k, err, oa)
			}
			continue
		}
		text := b.String()
		if strings.Count(text, name+" = ") > 1 {
			// The partner lines repeat the key itself: keep the example's.
			text = "[" + table + "]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n"
			if k == "qmtp.listen_tls" {
				text += ex + "\n"
			}
		}
		if _, err := config.Parse(k+" example", []byte(text)); err != nil {
			t.Errorf("%s:%d: %s: example does not load: %v\n%s", referencePage, d.line, k, err, text)
		}
	}
}

// localRouteKeys are the route keys only maildir and mbox routes take.
var localRouteKeys = map[string]bool{
	"route.separator": true, "route.folders": true, "route.programs": true,
	"route.srs_secret_file": true, "route.srs_domain": true,
}
