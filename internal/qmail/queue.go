package qmail

import (
	"cmp"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// DefaultQueueProgram is qmail's qmail-queue, used when neither Queue.Path
// nor $QMAILQUEUE names another.
const DefaultQueueProgram = "/var/qmail/bin/qmail-queue"

// MaxCustomReply is the longest reply notqmail takes from fd 6 after exit
// 82 (notqmail's qmail-queue(8): the text on fd 6 is the reply).
const MaxCustomReply = 255

// customReplyWait bounds how long Queue waits for the fd 6 text once the
// program has exited 82: the text is already in the pipe unless a child of
// the program still holds fd 6 open.
const customReplyWait = time.Second

// Queue runs a qmail-queue program for each message: the message goes to
// its fd 0, then the envelope to its fd 1, and its exit code becomes a
// mail.Status with the texts qmail's daemons send (StatusForExit). It is the
// sending side of the fd protocol, what qmail-smtpd, qmail-qmtpd and
// qmail-qmqpd do with $QMAILQUEUE.
//
// A Queue holds no state between messages and is safe for concurrent use.
type Queue struct {
	// Path is the program; empty means DefaultQueueProgram. Callers usually
	// set it from $QMAILQUEUE.
	Path string
	// Env is the program's environment; nil means this process's.
	Env []string
	// Stderr receives the program's standard error; nil discards it.
	// qmail's daemons pass their own, which tcpserver logs.
	Stderr io.Writer
}

// Result is the outcome of one qmail-queue run.
type Result struct {
	Status mail.Status
	// PID is the program's process id, qmail's "qp" (0 when it did not start).
	PID int
	// Exit is the program's exit code; -1 when it did not start or was
	// killed by a signal.
	Exit int
	// ID names the committed message in the sink's log lines: qmgate's
	// queue ID, or the program's pid. Empty when nothing was committed or
	// the sink gives no name.
	ID string
	// Problem says in plain words why nothing was committed, when the sink
	// knows more than Status ("the daemon is not running ..."), for the
	// operator: stderr and logs. It may name paths and users, so it is
	// never sent to a client; Status is the wire's answer.
	Problem string
}

// Put runs the program with body on fd 0 and env on fd 1, as qmail's
// qmail_open/qmail_close do. On success the Status text is qmail's
// "ok <unix time> qp <pid>".
//
// If reading body fails, the program is left without an envelope, so it
// commits nothing (qmail-queue exits 54 on an envelope cut short), and the
// Status is the body's error as a Status (mail.StatusOf): a limit such as
// mail.StatusTooBig stays what it is, anything else is temporary. The body
// is streamed, never held in memory. Cancelling ctx kills the program.
func (q *Queue) Put(ctx context.Context, env mail.Envelope, body io.Reader) Result {
	j, err := q.Start(ctx)
	if err != nil {
		return Result{Status: mail.StatusOf(err), Exit: -1}
	}
	if _, err := io.Copy(j, readSide{body}); err != nil {
		var be bodyReadError
		errors.As(err, &be)
		res := j.Abort()
		st := mail.StatusOf(be.err)
		if st.IsAccept() {
			st = mail.StatusTempFailure
		}
		res.Status = st
		return res
	}
	return j.Commit(env)
}

// Job is one run of the qmail-queue program: write the message into it,
// then Commit with the envelope, or Abort. This is the order of the
// protocol, and of QMTP and QMQP, which send the message before the
// envelope, so a server can stream each message straight through.
type Job struct {
	cmd     *exec.Cmd
	msgW    *os.File
	envW    *os.File
	customR *os.File
	pipeErr error // a write into the program failed: it stopped reading
	ended   bool
}

// Start runs the program with its fd 0 and fd 1 on pipes and fd 6 ready for
// a custom reply. The error, if any, is a mail.Status: "unable to exec qq"
// or "qqt failure".
func (q *Queue) Start(ctx context.Context) (*Job, error) {
	path := q.Path
	path = cmp.Or(path, DefaultQueueProgram)
	var files [6]*os.File // msgR, msgW, envR, envW, customR, customW
	closeAll := func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}
	for i := 0; i < 6; i += 2 {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll()
			return nil, StatusQQTrouble
		}
		files[i], files[i+1] = r, w
	}
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = q.Env
	cmd.Stdin = files[0]
	cmd.Stdout = files[2]
	cmd.Stderr = q.Stderr
	// fd 3, 4 and 5 closed, fd 6 the custom reply channel.
	cmd.ExtraFiles = []*os.File{nil, nil, nil, files[5]}
	if err := cmd.Start(); err != nil {
		closeAll()
		return nil, StatusForExit(-1, nil)
	}
	files[0].Close()
	files[2].Close()
	files[5].Close()
	return &Job{cmd: cmd, msgW: files[1], envW: files[3], customR: files[4]}, nil
}

// PID is the program's process id, qmail's "qp".
func (j *Job) PID() int { return j.cmd.Process.Pid }

// Write passes message bytes to the program. It never fails, as qmail's
// qmail_put does not: a program that stopped reading (it exited early)
// is reported by Commit, from its exit code.
func (j *Job) Write(p []byte) (int, error) {
	if j.pipeErr == nil && !j.ended {
		_, j.pipeErr = j.msgW.Write(p)
	}
	return len(p), nil
}

// Commit ends the message, writes the envelope and waits for the program.
// An address holding a NUL cannot be written (it would end early and shift
// the envelope): the run is aborted and the Status is
// mail.StatusBadAddresses.
func (j *Job) Commit(env mail.Envelope) Result {
	if j.ended {
		return Result{Status: mail.StatusTempFailure, PID: j.PID(), Exit: -1}
	}
	for _, a := range append([]string{env.Sender}, env.Recipients...) {
		if strings.IndexByte(a, 0) >= 0 {
			res := j.Abort()
			res.Status = mail.StatusBadAddresses
			return res
		}
	}
	j.ended = true
	j.msgW.Close()
	// A write to a program that has exited fails with EPIPE (Go ignores
	// SIGPIPE on such descriptors), so this cannot block once it is gone.
	if _, err := j.envW.Write(AppendEnvelope(make([]byte, 0, 64), env)); err != nil && j.pipeErr == nil {
		j.pipeErr = err
	}
	j.envW.Close()
	return j.wait()
}

// Abort ends the run without an envelope, so the program commits nothing
// (qmail-queue exits 54), and waits for it. The Result's Status is the
// program's, usually "qq read error"; callers report their own reason.
func (j *Job) Abort() Result {
	if j.ended {
		return Result{Status: mail.StatusTempFailure, PID: j.PID(), Exit: -1}
	}
	j.ended = true
	j.msgW.Close()
	j.envW.Close()
	return j.wait()
}

func (j *Job) wait() Result {
	defer j.customR.Close()
	werr := j.cmd.Wait()
	pid := j.PID()
	code := j.cmd.ProcessState.ExitCode()
	if code < 0 || werr != nil && code == 0 {
		// Killed by a signal (ctx cancellation included).
		return Result{Status: StatusForExit(-2, nil), PID: pid, Exit: -1}
	}
	var custom []byte
	if code == ExitCustom {
		custom = readCustom(j.customR)
	}
	if code == 0 && j.pipeErr != nil {
		// qmail_close: exit 0 after a local write error is still a failure.
		return Result{Status: StatusForExit(ExitReadError, nil), PID: pid, Exit: code}
	}
	st := StatusForExit(code, custom)
	if code == 0 {
		st = mail.OK("ok " + strconv.FormatInt(time.Now().Unix(), 10) + " qp " + strconv.Itoa(pid))
	}
	return Result{Status: st, PID: pid, Exit: code}
}

// bodyReadError marks a failure of the caller's body, as opposed to a
// failure writing into the pipe.
type bodyReadError struct{ err error }

func (e bodyReadError) Error() string { return e.err.Error() }
func (e bodyReadError) Unwrap() error { return e.err }

type readSide struct{ r io.Reader }

func (s readSide) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = bodyReadError{err}
	}
	return n, err
}

func readCustom(r *os.File) []byte {
	r.SetReadDeadline(time.Now().Add(customReplyWait))
	buf := make([]byte, MaxCustomReply+1)
	n, _ := io.ReadFull(r, buf)
	if n > MaxCustomReply {
		n = MaxCustomReply
	}
	return buf[:n]
}

// Statuses of the qmail-queue interface that are not exit codes.
var (
	// StatusQQTrouble: the pipes to the program could not be made.
	StatusQQTrouble = mail.Status{Class: mail.Temporary, Code: "4.3.0", Text: "qqt failure"}
)

// StatusForExit returns the Status qmail's daemons report for a qmail-queue
// exit code (qmail.c's qmail_close). code -1 means the
// program could not be started, -2 that it was killed by a signal. For 82,
// custom is the text the program wrote on fd 6: used as it is (letter D or Z
// first) when longer than 2 bytes, as notqmail does; otherwise, and by
// older qmail always, 82 is "qq temporary problem".
func StatusForExit(code int, custom []byte) mail.Status {
	if code == ExitCustom && len(custom) > 2 && (custom[0] == 'D' || custom[0] == 'Z') {
		return mail.ParseReply(custom)
	}
	if st, ok := exitStatus[code]; ok {
		return st
	}
	if PermanentExit(code) {
		return mail.Perm("5.3.0", "qq permanent problem")
	}
	return mail.Temp("4.3.0", "qq temporary problem")
}

// exitStatus holds the exit codes qmail.c's qmail_close names; any other is
// "qq temporary problem" or, by PermanentExit, "qq permanent problem".
var exitStatus = map[int]mail.Status{
	0:   mail.OK("ok"),
	-1:  mail.Temp("4.3.0", "unable to exec qq"),
	-2:  mail.Temp("4.3.0", "qq crashed"),
	11:  mail.Perm("5.1.3", "envelope address too long for qq"),
	115: mail.Perm("5.1.3", "envelope address too long for qq"),
	31:  mail.Perm("5.3.0", "mail server permanently rejected message"),
	51:  mail.Temp("4.3.0", "qq out of memory"),
	52:  mail.Temp("4.3.0", "qq timeout"),
	53:  mail.Temp("4.3.0", "qq write error or disk full"),
	54:  mail.Temp("4.3.0", "qq read error"),
	55:  mail.Temp("4.3.0", "qq unable to read configuration"),
	56:  mail.Temp("4.3.0", "qq trouble making network connection"),
	61:  mail.Temp("4.3.0", "qq trouble in home directory"),
	62:  mail.Temp("4.3.0", "qq trouble creating files in queue"),
	63:  mail.Temp("4.3.0", "qq trouble creating files in queue"),
	64:  mail.Temp("4.3.0", "qq trouble creating files in queue"),
	65:  mail.Temp("4.3.0", "qq trouble creating files in queue"),
	66:  mail.Temp("4.3.0", "qq trouble creating files in queue"),
	71:  mail.Temp("4.3.0", "mail server temporarily rejected message"),
	72:  mail.Temp("4.4.1", "connection to mail server timed out"),
	73:  mail.Temp("4.4.1", "connection to mail server rejected"),
	74:  mail.Temp("4.4.2", "communication with mail server failed"),
	81:  mail.Temp("4.3.0", "qq internal bug"),
	91:  mail.Temp("4.3.0", "qq internal bug"),
}

// ExitForStatus is the other direction, for qmgate's own qmail-queue and
// qmail-qmqpc: the exit code that makes a qmail daemon report st. An
// acceptance is 0, a permanent failure 31, a temporary one 71 ("mail server
// temporarily rejected message"), as qmail-qmqpc maps a K, D or Z reply.
func ExitForStatus(st mail.Status) int {
	switch {
	case st.IsAccept():
		return ExitOK
	case st.IsPermanent():
		return ExitRefused
	}
	return ExitTempRefused
}
