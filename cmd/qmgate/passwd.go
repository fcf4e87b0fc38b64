package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/qmgate/qmgate/smtp"
)

const passwdUsage = `usage: qmgate passwd USER

Print "USER:bcrypt-hash", a line for the file smtp.auth_file names. On a
terminal the password is asked for twice without echo; from a pipe the first
line is read, so it never appears in the process list:
  printf '%s\n' "$PASS" | qmgate passwd joe >> /etc/qmgate/passwd`

func init() {
	register(&command{name: "passwd", summary: "USER: ask for a password, print a line for smtp.auth_file", usage: passwdUsage, noConfig: true, run: runPasswd})
}

// runPasswd prints "user:bcrypt-hash" for the SMTP AUTH password file.
func runPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlags("passwd", passwdUsage)
	pos, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	switch {
	case len(pos) == 0:
		return usageError(fs, stderr, "name the user")
	case len(pos) > 1:
		return usageError(fs, stderr, "unexpected argument %q", pos[1])
	case pos[0] == "" || strings.ContainsAny(pos[0], ": \t\r\n"):
		return usageError(fs, stderr, "%q: a user name has no ':' and no white space", pos[0])
	}
	pass, err := readPassword(stdin, stderr)
	if err != nil {
		return fail(stderr, "passwd", 65, "%v", err)
	}
	if pass == "" {
		return fail(stderr, "passwd", 65, "empty password")
	}
	hash, err := smtp.HashPassword(pass)
	if err != nil {
		return fail(stderr, "passwd", 70, "%v", err)
	}
	fmt.Fprintf(stdout, "%s:%s\n", pos[0], hash)
	return 0
}

// readPassword asks twice without echo when stdin is a terminal, else
// reads the first line.
func readPassword(stdin io.Reader, stderr io.Writer) (string, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stderr, "Password: ")
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("reading the password: %v", err)
		}
		fmt.Fprint(stderr, "Again: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("reading the password: %v", err)
		}
		if string(p1) != string(p2) {
			return "", fmt.Errorf("the passwords differ")
		}
		return string(p1), nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("reading the password: %v", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}
