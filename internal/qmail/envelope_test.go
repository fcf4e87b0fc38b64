package qmail

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/qmgate/qmgate/mail"
)

func TestReadEnvelope(t *testing.T) {
	long := strings.Repeat("a", MaxEnvelopeAddress)
	tooLong := long + "a"
	cases := []struct {
		name string
		in   string
		code int // 0: accepted
		want mail.Envelope
	}{
		{"one", "Fa@x\x00Tb@y\x00\x00", 0, mail.Envelope{Sender: "a@x", Recipients: []string{"b@y"}}},
		{"several", "F\x00Tb@y\x00Tc@z\x00Tb@y\x00\x00", 0, mail.Envelope{Recipients: []string{"b@y", "c@z", "b@y"}}},
		{"no recipients", "Fa@x\x00\x00", 0, mail.Envelope{Sender: "a@x"}},
		{"trailing bytes ignored", "Fa@x\x00Tb@y\x00\x00junk", 0, mail.Envelope{Sender: "a@x", Recipients: []string{"b@y"}}},
		{"longest address", "F" + long + "\x00T" + long + "\x00\x00", 0, mail.Envelope{Sender: long, Recipients: []string{long}}},
		{"sender too long", "F" + tooLong + "\x00Tb@y\x00\x00", ExitAddressTooLong, mail.Envelope{}},
		{"recipient too long", "Fa@x\x00T" + tooLong + "\x00\x00", ExitAddressTooLong, mail.Envelope{}},
		{"recipient too long, cut", "Fa@x\x00T" + tooLong, ExitAddressTooLong, mail.Envelope{}},
		{"first byte not F", "Ta@x\x00\x00", ExitEnvelopeFormat, mail.Envelope{}},
		{"entry not T", "Fa@x\x00Xb@y\x00\x00", ExitEnvelopeFormat, mail.Envelope{}},
		{"empty", "", ExitReadError, mail.Envelope{}},
		{"cut in sender", "Fa@", ExitReadError, mail.Envelope{}},
		{"cut before final NUL", "Fa@x\x00Tb@y\x00", ExitReadError, mail.Envelope{}},
		{"cut in recipient", "Fa@x\x00Tb@", ExitReadError, mail.Envelope{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env, err := ReadEnvelope(strings.NewReader(tc.in), 0)
			if tc.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(env, tc.want) {
					t.Fatalf("got %+v, want %+v", env, tc.want)
				}
				return
			}
			var ee *EnvelopeError
			if !errors.As(err, &ee) || ee.Code != tc.code {
				t.Fatalf("got %v, want exit %d", err, tc.code)
			}
		})
	}
}

func TestReadEnvelopeReadError(t *testing.T) {
	_, err := ReadEnvelope(io.MultiReader(strings.NewReader("Fa@x\x00"), iotest.ErrReader(errors.New("boom"))), 0)
	var ee *EnvelopeError
	if !errors.As(err, &ee) || ee.Code != ExitReadError {
		t.Fatalf("got %v", err)
	}
}

func TestReadEnvelopeMaxRecipients(t *testing.T) {
	in := "Fa@x\x00T1\x00T2\x00T3\x00\x00"
	if _, err := ReadEnvelope(strings.NewReader(in), 3); err != nil {
		t.Fatal(err)
	}
	_, err := ReadEnvelope(strings.NewReader(in), 2)
	var ee *EnvelopeError
	if !errors.As(err, &ee) || ee.Code != ExitEnvelopeFormat {
		t.Fatalf("got %v", err)
	}
}

func TestAppendEnvelopeRoundTrip(t *testing.T) {
	env := mail.Envelope{Sender: "", Recipients: []string{"a@x", "Hate.The Quoting@y"}}
	b := AppendEnvelope(nil, env)
	if want := "F\x00Ta@x\x00THate.The Quoting@y\x00\x00"; string(b) != want {
		t.Fatalf("got %q", b)
	}
	got, err := ReadEnvelope(bytes.NewReader(b), 0)
	if err != nil || !reflect.DeepEqual(got, env) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
}
