package inject

import (
	"reflect"
	"testing"
)

func TestParseAddressList(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"a@x", []string{"a@x"}},
		{"a@x, b@y", []string{"a@x", "b@y"}},
		{"Jane Doe <jane@x>, \"Doe, John\" <john@x>", []string{"jane@x", "john@x"}},
		{"jane@x (Jane Doe), b@y", []string{"jane@x", "b@y"}},
		{"team: a@x, b@y; c@z", []string{"a@x", "b@y", "c@z"}},
		{"undisclosed-recipients:;", nil},
		{"root", []string{"root"}},
		{"root, admin@x", []string{"root", "admin@x"}},
		{"\"john smith\"@x.org", []string{"john smith@x.org"}},
		{"John <john@x", []string{"john@x"}},
		{"<@relay.example:user@x>", []string{"user@x"}},
		{"Jörg <jörg@x.de>", []string{"jörg@x.de"}},
		{"a@x,, ,b@y,", []string{"a@x", "b@y"}},
		{"a@x;b@y", []string{"a@x", "b@y"}},
		{"Just A Name", nil},
		{"sloppy name sloppy@x", []string{"sloppy@x"}},
		{"a@[192.0.2.1]", []string{"a@[192.0.2.1]"}},
		{"(comment (nested)) a@x", []string{"a@x"}},
		{"<a@x>", []string{"a@x"}},
		{"", nil},
	}
	for _, tc := range cases {
		if got := ParseAddressList(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}
