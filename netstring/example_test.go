package netstring_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/qmgate/qmgate/netstring"
)

// Reading the recipient list of a QMTP package (the worked example of the
// QMTP specification): an outer netstring holding one netstring per
// recipient. Addresses are small, so ReadBytes with a tight limit fits.
func Example() {
	list := "83:39:Hate.The Quoting@silverton.berkeley.edu,36:\\Backslashes!@silverton.berkeley.EDU,,"
	r := netstring.NewReader(strings.NewReader(list))
	outer, err := r.ReadBytes(1 << 20)
	if err != nil {
		panic(err)
	}
	inner := netstring.NewReader(bytes.NewReader(outer))
	for {
		rcpt, err := inner.ReadBytes(999)
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		fmt.Printf("%s\n", rcpt)
	}
	// Output:
	// Hate.The Quoting@silverton.berkeley.edu
	// \Backslashes!@silverton.berkeley.EDU
}

// A message body is streamed, never held in memory: Next returns a reader
// bounded to the declared length, and End checks the comma.
func ExampleReader_Next() {
	r := netstring.NewReader(strings.NewReader("12:\nHello world,5:a@b.c,"))
	body, n, err := r.Next(50 << 20)
	if err != nil {
		panic(err)
	}
	fmt.Println("declared", n)
	if _, err := io.Copy(os.Stdout, body); err != nil {
		panic(err)
	}
	if err := r.End(); err != nil {
		panic(err)
	}
	sender, _ := r.ReadBytes(999)
	fmt.Printf("\nsender %s, consumed %d bytes\n", sender, r.Consumed())
	// Output:
	// declared 12
	//
	// Hello world
	// sender a@b.c, consumed 24 bytes
}

// Malformed input gives a distinct error; a length over the caller's limit
// is refused before any data is read.
func ExampleReader_ReadBytes_errors() {
	for _, in := range []string{"007:bond007,", "1a:x,", "2000:", "5:hello;", "5:hel"} {
		_, err := netstring.NewReader(strings.NewReader(in)).ReadBytes(1000)
		fmt.Printf("%-14q %v\n", in, err)
	}
	strict := netstring.NewReader(strings.NewReader("007:bond007,"))
	strict.Strict = true
	_, err := strict.ReadBytes(1000)
	fmt.Println("strict:", errors.Is(err, netstring.ErrLeadingZero))
	// Output:
	// "007:bond007," <nil>
	// "1a:x,"        netstring: non-digit in length
	// "2000:"        netstring: length exceeds limit
	// "5:hello;"     netstring: missing comma
	// "5:hel"        unexpected EOF
	// strict: true
}

// Replies and other small netstrings are built with Append.
func ExampleAppend() {
	var b []byte
	b = netstring.Append(b, []byte("Kok 838640135 qp 1390"))
	b = netstring.AppendString(b, "")
	fmt.Printf("%s\n", b)
	// Output: 21:Kok 838640135 qp 1390,0:,
}

// WriteFrom frames a body of known size streamed from a file or a queue.
func ExampleWriteFrom() {
	var w bytes.Buffer
	body := "\nSubject: hi\n\nhello\n"
	if err := netstring.WriteFrom(&w, int64(len(body)), strings.NewReader(body)); err != nil {
		panic(err)
	}
	fmt.Printf("%q %d\n", w.String(), netstring.Len(int64(len(body))))
	// Output: "20:\nSubject: hi\n\nhello\n," 24
}
