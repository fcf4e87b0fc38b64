// Package smtp is qmgate's SMTP edge: an inbound server (Server) built on
// github.com/emersion/go-smtp, and an outbound delivery client (Client) built
// on go-smtp's client. Both speak in mail.Envelope and mail.Status, so the
// relay plugs its policy and its queue in the same way as for QMTP and QMQP.
//
// It is not a mail server by itself: it knows nothing of the queue, of
// rcpthosts or of routing. A Handler decides on each address and commits
// each message; a caller of Client.Dial and Conn.Send decides where mail
// goes and what to do with each recipient's Status.
//
// # Server
//
// A Server looks like net/http's: exported fields are the knobs, every limit
// has a safe default (the Default* constants; zero means the default, a
// negative value no limit), and Serve(l), ServeTLS(l), ServeConn, Shutdown
// and Close run it. Embedding it takes a few lines:
//
//	srv := &smtp.Server{Hostname: "mx.example.net", Handler: h, TLSConfig: cfg}
//	go srv.Serve(l)                     // port 25: STARTTLS offered
//	sub := &smtp.Server{Hostname: "mx.example.net", Handler: h, TLSConfig: cfg,
//		Auth: passwords, RequireAuth: true}
//	go sub.Serve(l587)                  // submission: MAIL needs AUTH first
//	go sub.ServeTLS(l465)               // submissions: implicit TLS
//
// The Handler is asked at MAIL FROM, at each RCPT TO and once per message.
// Addresses arrive raw: go-smtp removes the angle brackets and the quoting
// of a quoted local part ("Hate.The Quoting"@example.com becomes
// Hate.The Quoting@example.com), the null sender is "". Deliver reads a body
// that starts with the server's Received line (qmail's format, with the HELO
// name and the RFC 3848 protocol word: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA;
// RFC 6531's UTF8SMTP forms when the client used SMTPUTF8) and continues
// with the message in stored form, LF line ends; the client gets 250, with
// Deliver's text, only once Deliver has accepted the message.
//
// Every error that leaves a go-smtp session method is a bare *smtp.SMTPError
// made from a mail.Status (replyError): go-smtp turns any other error into a
// reply that carries the error's text, and for DATA into a permanent 554;
// here an unknown error is 451 4.3.0 and internal text never reaches a
// client.
//
// Extensions offered: PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES,
// SIZE (with the limit), CHUNKING (go-smtp always offers it; BDAT works like
// DATA), LIMITS RCPTMAX, STARTTLS when TLSConfig is set, AUTH PLAIN LOGIN
// when an Authenticator is set (and TLS is up, unless AllowInsecureAuth).
// The limits, timeouts and AUTH rules are those of the Server's fields;
// MaxMessageBytes counts the message as stored, as qmail's databytes and
// qmgate's QMTP and QMQP servers do.
//
// # Line ends, bare LF, bare CR and smuggling
//
// The stored form is qmail's: LF line ends. CR LF becomes LF as the message
// streams through. go-smtp ends the data only at CR LF "." CR LF and removes
// a stuffing dot only after CR LF, so:
//
//   - A bare LF is accepted as a line end and stored as LF. It can neither
//     end the data nor start a second transaction: LF "." LF, LF "." CR LF
//     and CR LF "." LF (the 2023 "SMTP smuggling" forms) stay inside the
//     message, where the client put them. (After CR LF the "." of
//     CR LF "." LF is taken as a stuffing dot and removed.) Unlike
//     qmail-smtpd, which answers a bare LF with 451 and hangs up, the server
//     accepts such mail, which many programs produce; its relay client later
//     sends every line end as CR LF and stuffs the dot, so nothing ambiguous
//     leaves qmgate either.
//   - A bare CR (one not followed by LF) refuses the message with 554 5.6.0:
//     RFC 5321 2.3.8 forbids it, and go-smtp's end-of-data scanner loses its
//     place after CR CR LF, so such input cannot be taken apart reliably
//     (dataFilter says what the server does when go-smtp misses the end).
//   - A line longer than MaxLineLength refuses the message (554 5.6.0) and
//     ends the session: go-smtp applies one line limit to commands and data
//     and cannot read on after it.
//
// # Client
//
// Client.Dial connects to "host[:port]", "smtp://host[:port]" (STARTTLS per
// the TLSPolicy) or "smtps://host[:port]" (implicit TLS), says EHLO,
// negotiates TLS and authenticates; Conn.Send delivers one message and
// returns one mail.Status per recipient; a Conn carries messages one after
// the other until Broken reports it unusable. Remote replies map to a Status
// by their first digit, keeping the enhanced code and the remote text
// ("remote host said: 550 5.1.1 no such user") for DSNs; anything else is
// temporary. Failures to connect, greet, negotiate TLS or authenticate are
// temporary, a 5xx greeting and a refused password included, as with
// qmail-remote.
//
// # go-smtp notes
//
// Things go-smtp v0.26.0 does that this package works around, for whoever
// upgrades it (v0.26.0 made one workaround unnecessary: RCPT
// TO:<Postmaster> without a domain, which RFC 5321 4.5.1 requires, is now
// parsed; go-smtp hands over the bare local part, which the session turns
// into postmaster@Hostname):
//
//   - Its STARTTLS wraps the connection it was given in a TLS of its own,
//     below which the plaintext cannot be seen. The server therefore
//     terminates TLS itself, implicit TLS and STARTTLS alike (go-smtp is
//     given no TLSConfig; the server offers STARTTLS in the EHLO reply and
//     answers the command, refusing a client that sent more behind it,
//     RFC 3207 5), and go-smtp reads plaintext from serverConn.
//   - Its data reader drops the ".\r" of a line CR LF "." CR X without a
//     word, and after "." CR CR LF waits for data the client may never
//     send; serverConn watches the plaintext for both (scanDotCR).
//   - Its success replies carry fixed texts ("Roger, accepting mail from",
//     "I'll make sure <x> gets this"); serverConn replaces them on the way
//     out with plain ones (plain.go).
//   - Errors from session methods other than *SMTPError become replies with
//     err.Error() as text (554 from Data). Every error here is converted.
//   - Read and write timeouts are per command and off by default; DATA has
//     none. serverConn sets a deadline per read and write instead.
//   - Its data reader counts its size limit in wire bytes and cannot be
//     drained past it; the session turns go-smtp's limit off during a
//     transaction (it stays advertised) and counts stored bytes itself. Each
//     connection therefore has its own go-smtp Server value.
//   - It does not tell HELO from EHLO; it asks the session for its AUTH
//     mechanisms only while answering EHLO, which is how the session knows
//     (AllowInsecureAuth is on in go-smtp for that reason, and the TLS rule
//     for AUTH is enforced by the session).
//   - A timeout in the middle of a BDAT chunk would be answered 554 with the
//     error text, so a timed-out read inside a transaction is a 421 reply
//     error.
//   - Its client has no STARTTLS that keeps the EHLO name and allows going
//     on without TLS; the greeting, first EHLO and STARTTLS are done with
//     net/textproto and go-smtp's client takes over after the handshake. Its
//     Reset makes it say EHLO again before the next MAIL.
package smtp
