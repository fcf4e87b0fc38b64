// Package inject is qmgate's nullclient sendmail as a testable package: the
// command line (ParseArgs), the composition of the message from what a
// program pipes in (Composer), and the hand-over to a hub or to the local
// queue (Nullclient), with the exit codes programs expect from sendmail.
// cmd/qmgate wires it as `qmgate sendmail`, and as the binary itself when
// it runs under the names sendmail and mailq.
//
// It is not an MTA: it keeps no queue of its own, needs no privilege and
// writes nowhere shared; it speaks QMQP to a hub or to the local daemon's
// socket, as mini-qmail's qmail-qmqpc does.
//
// # Configuration
//
// From -config FILE, $QMGATE_CONFIG or /etc/qmgate/qmgate.toml (else the
// embedded default): hostname (Message-IDs), default_domain (qualifies bare
// names), max_message_bytes, max_recipients, and
//
//	[nullclient]
//	qmqp_servers = ["hub1.example.net:628", "hub2.example.net:628"]
//	spool_dir    = "/var/spool/qmgate"   # spool mode; the local daemon's queue_dir
//	timeout      = "60s"                 # bounds each QMQP transfer
//
// and, for spool mode, the local daemon's socket in [qmqp] listen
// ("unix:/run/qmgate/qmqp.sock").
//
// # Flags
//
//	-t            recipients from To:, Cc: and Bcc: as well (Resent-To:,
//	              Resent-Cc: and Resent-Bcc: instead when present); the
//	              command-line recipients are kept too (Postfix's reading)
//	-i, -oi       a line holding a single "." is data; without it, such a
//	              line ends the message
//	-f ADDR, -r   envelope sender, "-f addr" or "-faddr"; '' and '<>' are
//	              the null sender
//	-F NAME       full name for an added From:
//	-bm           send a message (the default)
//	-bp           list the local queue (mailq); direct mode has none
//	-bs           SMTP on stdin and stdout (full addresses only)
//	-bi, -I, -q   nothing to do in a nullclient: exit 0, stdin unread
//	-v            each step on stderr
//	-config FILE  qmgate's configuration
//	--            end of flags
//
// Accepted and ignored, never an error: -o with any other option (-odb,
// -odi, -oem, -oep, -om...), -B TYPE, -N DSN, -R RET, -V ENVID, -X FILE,
// -L TAG, -C FILE, -h N, -A, -d, -e, -M, -O, -p, -G, -m, -n, -s, -U and
// unknown letters (with the rest of their argument). The modes -bd, -bD,
// -bt, -bv, -bh, -bH and -bP are usage errors. The first argument that is
// not a flag starts the recipients; each may be an address list
// ("a@x, Name <b@y>").
//
// # The message
//
//   - CR LF line ends become LF (PHP 8 writes its header with CR LF); a CR
//     inside a line stays. A last line without a newline gets one: SMTP
//     cannot carry a partial last line.
//   - A Received line names the local user: "Received: (qmgate sendmail
//     PID invoked by uid UID); DATE".
//   - Date: (RFC 5322, local time), Message-ID: (<time.pid.random@hostname>)
//     and From: are added when missing. From: is "Full Name <address>": the
//     -f address with the -F name, or the user's own address
//     (login@default_domain) with -F or the user's name ($QMAILNAME,
//     $MAILNAME, $NAME, else the password entry's).
//   - Bcc: and Resent-Bcc: are removed. An mbox "From " line on top is
//     dropped. A body with no blank line before it gets one.
//   - Envelope addresses without a domain ("root", "root@") get
//     @default_domain, whatever the header says; the header itself is left
//     as written. Recipients are deduplicated.
//   - The sender is -f, else the real user (os/user for the real uid, not
//     $USER) at default_domain.
//   - The header is bounded (DefaultMaxHeaderBytes), the message by
//     max_message_bytes; the body streams to an unlinked temporary file in
//     $TMPDIR, never into memory, because QMQP sends the length first.
//
// # Direct and spool mode
//
// Direct mode (no spool_dir), mini-qmail's: QMQP to qmqp_servers in order,
// failing over only when a connect fails (10 s each). Once connected the
// server's word is final; a broken transfer is a temporary failure, since
// the server may have queued the message.
//
// Spool mode (spool_dir set), nullmailer's: the hubs are tried with a short
// connect timeout (3 s each). A message that none accepts right away (no
// connection, Z, or a transfer that broke) goes to the local daemon's QMQP
// socket; with no daemon there, it is committed into spool_dir itself when
// the user may write it (the queue's owner; root first becomes the owner,
// so the daemon can read what it leaves). `qmgate serve` on the app server
// forwards it with retries. A D from a hub is final. Exit 0 means the
// message is durable at a hub or in the local queue, nowhere else.
//
// # Exit codes (sysexits)
//
//	0   accepted by a hub, the local daemon or the local queue
//	64  EX_USAGE: bad flags, no recipients without -t, a command-line
//	    address that cannot be one
//	65  EX_DATAERR: header or message too large, -t found no recipient, or
//	    refused for its content or size (5.6.x, 5.3.4)
//	67  EX_NOUSER: an address refused (5.1.x)
//	69  EX_UNAVAILABLE: refused for good for another reason
//	75  EX_TEMPFAIL: not sent, try again (hub down or busy, no spool)
//	78  EX_CONFIG: the configuration cannot be read or names no way out
//
// Each failure prints one line on stderr: "qmgate sendmail: REASON".
package inject
