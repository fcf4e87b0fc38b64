package dotqmail

import (
	"reflect"
	"strings"
	"testing"

	"github.com/qmgate/qmgate/mail"
)

func TestParse(t *testing.T) {
	got, err := Parse([]byte("# c\n./Maildir/\n/abs/mbox\t \n\n&a@example.net\nb@example.net\n|prog  x\n+other\n+list\n&c@example.net"), false)
	if err != nil {
		t.Fatal(err)
	}
	want := []Delivery{
		{Kind: Maildir, Path: "./Maildir/", Line: 2},
		{Kind: Mbox, Path: "/abs/mbox", Line: 3},
		{Kind: Forward, Address: "a@example.net", Line: 5},
		{Kind: Forward, Address: "b@example.net", Line: 6},
		{Kind: Program, Command: "prog  x", Line: 7},
		{Kind: Forward, Address: "c@example.net", Line: 10},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if got, err := Parse([]byte("# only comments\n"), false); err != nil || len(got) != 0 {
		t.Fatalf("comments only: %v %v", got, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		in          string
		forwardOnly bool
		line        int
		want        string
	}{
		{"\n./Maildir/\n", false, 1, "first line is blank"},
		{" \t\n", false, 1, "first line is blank"},
		{"a@b\x00c\n", false, 0, "NUL"},
		{"./Maildir/\r\n", false, 1, "carriage return"},
		{"./a\x1bb\n", false, 1, "control character"},
		{"&\n", false, 1, "no address"},
		{"& a@example.net\n", false, 1, "spaces"},
		{"&<a@example.net>\n", false, 1, "angle brackets"},
		{"&a@example.net (Name)\n", false, 1, "spaces"},
		{"@example.net\n", false, 1, "user@domain"},
		{"&" + strings.Repeat("a", mail.MaxAddressLen) + "\n", false, 1, "too long"},
		{"&a@example.net\n./Maildir/\n", true, 2, "forward-only"},
		{"|prog\n", true, 1, "forward-only"},
		{"./Maildir/\n+list\n|prog\n", false, 3, "forward-only"},
	} {
		_, err := Parse([]byte(tc.in), tc.forwardOnly)
		e, ok := err.(*Error)
		if !ok {
			t.Errorf("%q: error %v, want *Error", tc.in, err)
			continue
		}
		if !e.Status.IsTemporary() || e.Line != tc.line || !strings.Contains(e.Status.Text, tc.want) {
			t.Errorf("%q: %+v, want line %d about %q", tc.in, e, tc.line, tc.want)
		}
	}
}

// FuzzParse checks that Parse never panics, that what it accepts is
// well-formed, and that every error is a temporary *Error.
func FuzzParse(f *testing.F) {
	f.Add([]byte("./Maildir/\n&a@example.net\n|prog\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, forwardOnly bool) {
		ds, err := Parse(data, forwardOnly)
		if err != nil {
			e, ok := err.(*Error)
			if !ok || !e.Status.IsTemporary() || ds != nil {
				t.Fatalf("error %v (%T) with %v", err, err, ds)
			}
			return
		}
		for _, d := range ds {
			switch d.Kind {
			case Maildir, Mbox:
				if forwardOnly || d.Path == "" || (d.Path[0] != '.' && d.Path[0] != '/') || (d.Kind == Maildir) != strings.HasSuffix(d.Path, "/") {
					t.Fatalf("bad mailbox %+v", d)
				}
			case Forward:
				if badForward(d.Address) != "" {
					t.Fatalf("bad forward %+v", d)
				}
			case Program:
				if forwardOnly {
					t.Fatalf("program in forward-only file %+v", d)
				}
			default:
				t.Fatalf("kind %v", d.Kind)
			}
			if d.Line < 1 || strings.ContainsAny(d.Path+d.Address+d.Command, "\x00\r\n") {
				t.Fatalf("bad delivery %+v", d)
			}
		}
	})
}
