package inject

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	cases := []struct {
		args string
		want Options
	}{
		{"a@x", Options{Recipients: []string{"a@x"}}},
		{"-t -i", Options{ExtractRecipients: true, IgnoreDots: true}},
		{"-ti", Options{ExtractRecipients: true, IgnoreDots: true}},
		{"-oi -t", Options{ExtractRecipients: true, IgnoreDots: true}},
		{"-o i a@x", Options{IgnoreDots: true, Recipients: []string{"a@x"}}},
		{"-f me@x a@x", Options{Sender: "me@x", SenderSet: true, Recipients: []string{"a@x"}}},
		{"-fme@x a@x", Options{Sender: "me@x", SenderSet: true, Recipients: []string{"a@x"}}},
		{"-r me@x a@x", Options{Sender: "me@x", SenderSet: true, Recipients: []string{"a@x"}}},
		{"-f <> a@x", Options{Sender: "<>", SenderSet: true, Recipients: []string{"a@x"}}},
		{"-F Jane a@x", Options{FullName: "Jane", Recipients: []string{"a@x"}}},
		{"-FJane a@x", Options{FullName: "Jane", Recipients: []string{"a@x"}}},
		{"-bp", Options{Mode: ModeList}},
		{"-bs", Options{Mode: ModeSMTP}},
		{"-b s", Options{Mode: ModeSMTP}},
		{"-bm a@x", Options{Recipients: []string{"a@x"}}},
		{"-bi", Options{Mode: ModeNoop}},
		{"-I", Options{Mode: ModeNoop}},
		{"-q", Options{Mode: ModeNoop, Ignored: []string{"-q"}}},
		{"-q30m", Options{Mode: ModeNoop, Ignored: []string{"-q30m"}}},
		{"-v a@x", Options{Verbose: true, Recipients: []string{"a@x"}}},
		{"-odb -oem -oep -om -B8BITMIME -N never -R hdrs -V id1 -X /tmp/log -L app -h 5 -C /etc/mail/sendmail.cf -G -U -n -m a@x",
			Options{Recipients: []string{"a@x"}, Ignored: []string{"-odb", "-oem", "-oep", "-om", "-B 8BITMIME", "-N never", "-R hdrs", "-V id1", "-X /tmp/log", "-L app", "-h 5", "-C /etc/mail/sendmail.cf", "-G", "-U", "-n", "-m"}}},
		{"-Y7 a@x", Options{Recipients: []string{"a@x"}, Ignored: []string{"-Y7"}}},
		{"-- -notaflag@x", Options{Recipients: []string{"-notaflag@x"}}},
		{"a@x -f b@x", Options{Recipients: []string{"a@x", "-f", "b@x"}}},
		{"-config /etc/q.toml -t", Options{ConfigPath: "/etc/q.toml", ExtractRecipients: true}},
		{"--config=/etc/q.toml a@x", Options{ConfigPath: "/etc/q.toml", Recipients: []string{"a@x"}}},
		{"-N", Options{Ignored: []string{"-N"}}},
		{"", Options{}},
	}
	for _, tc := range cases {
		got, err := ParseArgs(strings.Fields(tc.args))
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.args, *got, tc.want)
		}
	}
}

func TestParseArgsErrors(t *testing.T) {
	for _, args := range []string{"-f", "-t -r", "-F", "-bd", "-bt", "-bv a@x", "-b", "-config"} {
		if _, err := ParseArgs(strings.Fields(args)); err == nil {
			t.Errorf("%q: no error", args)
		} else if ExitOf(err) != ExitUsage {
			t.Errorf("%q: exit %d", args, ExitOf(err))
		}
	}
}

func TestParseArgsEmptySender(t *testing.T) {
	got, err := ParseArgs([]string{"-f", "", "a@x"})
	if err != nil || !got.SenderSet || got.Sender != "" {
		t.Fatalf("%+v %v", got, err)
	}
}
