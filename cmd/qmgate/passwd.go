package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/qmgate/qmgate/smtp"
)

func init() {
	register(&command{name: "passwd", summary: "USER: read a password on stdin, print a line for smtp.auth_file", run: runPasswd})
}

// runPasswd prints "user:bcrypt-hash" for the SMTP AUTH password file. The
// password is read from the first line of stdin, so it never appears in the
// process list: echo -n 's3cret' | qmgate passwd joe >> /etc/qmgate/passwd
func runPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) != 1 || strings.ContainsAny(args[0], ": \t\r\n") || args[0] == "" {
		fmt.Fprintln(stderr, "usage: qmgate passwd USER   (password on stdin; USER without ':' or spaces)")
		return 64
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return fail(stderr, "passwd", 66, "reading the password: %v", err)
	}
	pass := strings.TrimRight(line, "\r\n")
	if pass == "" {
		return fail(stderr, "passwd", 65, "empty password")
	}
	hash, err := smtp.HashPassword(pass)
	if err != nil {
		return fail(stderr, "passwd", 70, "%v", err)
	}
	fmt.Fprintf(stdout, "%s:%s\n", args[0], hash)
	return 0
}
