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
// The Handler is asked at MAIL FROM (Sender), at each RCPT TO (Recipient)
// and once per message (Deliver). Addresses arrive raw: go-smtp removes
// the angle brackets and the quoting of a quoted local part
// ("Hate.The Quoting"@example.com becomes Hate.The Quoting@example.com), the
// null sender is "". Every answer is a mail.Status, rendered as the SMTP
// reply with its code, enhanced code and sanitized text. Deliver reads a
// body that starts with the server's Received line (qmail's format, with
// the HELO name and the RFC 3848 protocol word: SMTP, ESMTP, ESMTPS, ESMTPA,
// ESMTPSA; RFC 6531's UTF8SMTP forms when the client used SMTPUTF8) and
// continues with the message in stored form, LF line ends. It must return
// an acceptance only once the message is durable; the client gets 250 only
// then, with Deliver's text.
//
// Every error that leaves a go-smtp session method is a bare *smtp.SMTPError
// made from a mail.Status. go-smtp turns any other error into a reply that
// carries the error's text, and for DATA into a permanent 554; here an
// unknown error is 451 4.3.0 and internal text never reaches a client.
//
// Extensions offered: PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES,
// SIZE (with the limit), CHUNKING (go-smtp always offers it; BDAT works like
// DATA), LIMITS RCPTMAX, STARTTLS when TLSConfig is set, AUTH PLAIN LOGIN
// when an Authenticator is set (and TLS is up, unless AllowInsecureAuth).
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
//   - A bare CR (one not followed by LF) refuses the message:
//     554 5.6.0. RFC 5321 2.3.8 forbids it, and go-smtp's end-of-data scanner
//     loses its place after CR CR LF (it then misses a stuffing dot, or the
//     terminator itself), so such input cannot be taken apart reliably. The
//     session goes on normally when go-smtp finds the end of the data. When
//     the message ended in CR CR LF "." CR LF, which go-smtp does not see as
//     the end, the server sees it, answers 554 and closes the connection,
//     since go-smtp cannot be brought back in step; if that happens in the
//     last few kilobytes go-smtp holds back, the answer comes when the read
//     times out.
//   - A line longer than MaxLineLength refuses the message (554 5.6.0) and
//     ends the session: go-smtp applies one line limit to commands and data
//     and cannot read on after it. The default is 64 KiB, far beyond RFC
//     5321's 1000, because real mail has long lines.
//
// # Limits
//
// MaxMessageBytes counts the message as stored (LF, without the server's
// Received line), as qmail's databytes does and as qmgate's QMTP and QMQP
// servers do; it is advertised as SIZE and a MAIL with a larger SIZE gets
// 552 5.3.4 at once. A message over it is read to its end and refused with
// 552 5.3.4. MaxHops counts Received: and Delivered-To: lines in the header
// (mail.BodyReader): 100 or more gets 554 5.4.6. MaxRecipients gives
// 452 4.5.3 for the excess recipients, which the client sends again later.
//
// go-smtp's timeouts are per command and off by default, and none covers a
// DATA transfer. The Server instead puts a deadline on every read and write
// (ReadTimeout, WriteTimeout, 5 minutes) and caps the session
// (SessionTimeout, 1 hour); a read that times out gets
// "421 4.4.2 Idle timeout" (go-smtp's text) and the connection closes.
// MaxConns and MaxConnsPerIP refuse clients over the limit with
// "421 4.3.2 too many connections, try again later" before reading
// anything. Shutdown closes the listeners, ends idle sessions with 421, and
// waits for open transactions to finish.
//
// # AUTH
//
// PLAIN (RFC 4616, with or without an initial response; an authorization
// identity other than the user's own is refused) and LOGIN (the de-facto
// mechanism: challenges "Username:" and "Password:", base64 "VXNlcm5hbWU6"
// and "UGFzc3dvcmQ6"; an initial response is the user name). AUTH is offered
// and accepted only under TLS unless AllowInsecureAuth is set; before TLS it
// is refused with 538 5.7.11. A wrong password gets 535 5.7.8 after
// AuthFailureDelay (1 s); the MaxAuthFailures-th failure (3) on a connection
// gets 421 4.7.0 and the connection closes. A failing Authenticator (not a
// wrong password) is 454 4.7.0. RequireAuth refuses MAIL with 530 5.7.0
// until AUTH succeeded. PasswordFile is an Authenticator over a file of
// bcrypt hashes (HashPassword makes them), constant-time for unknown users.
//
// # Client
//
// Client.Dial connects to "host[:port]" or "smtp://host[:port]" (STARTTLS per
// the TLS policy) or "smtps://host[:port]" (implicit TLS, default port 465),
// says EHLO LocalName, negotiates TLS and authenticates; Conn.Send delivers
// one message and returns one mail.Status per recipient; a Conn carries
// messages one after the other (RSET only after a transaction that did not
// end with DATA) until Broken reports it unusable.
//
// TLS policies: TLSRequired (the zero value, for smarthosts) needs
// STARTTLS and a certificate that verifies, or nothing is sent (temporary
// 4.7.4 or 4.7.5). TLSOpportunistic (for MX delivery) uses STARTTLS when
// offered, without verifying the certificate (RFC 7435); if the handshake
// fails, or the server sends plaintext after its STARTTLS reply, it connects
// again and delivers without TLS, exactly as to a server that never offered
// it (Postfix's "may" level does the same); a refused STARTTLS command
// continues in plaintext on the same connection. TLSNone never tries.
// Credentials go only over TLS unless AllowInsecureAuth.
//
// Per recipient: the MAIL, RCPT and DATA commands are driven one by one
// (go-smtp's SendMail stops at the first refused recipient). A refused RCPT
// is that recipient's status and the others go on; with no recipient
// accepted no DATA is sent; the reply to the message applies to every
// accepted recipient. Replies map to Status by their first digit (2 accept,
// 4 temporary, 5 permanent), keeping the enhanced code and the remote text
// as "remote host said: 550 5.1.1 no such user" for DSNs; anything else (a
// malformed reply, a code outside 2xx-5xx, a timeout, a lost connection) is
// temporary for every recipient not yet answered. A connection lost after
// the final "." says "possible duplicate", as qmail-remote does. Failures to
// connect, greet, negotiate TLS or authenticate are temporary, a 5xx
// greeting and a refused password included.
//
// Addresses: a VERP sender (pre@host-@[], mail.IsVERP) is expanded per
// recipient in Send (mail.ExpandVERP), one transaction per recipient, so no
// caller can forget it; the body is then read again for each, so it should
// be an io.Seeker (an *os.File from the queue is), or it is copied to a
// temporary file. Addresses are quoted for SMTP (mail.QuoteSMTP: go-smtp's
// client writes what it is given between angle brackets); one with no SMTP
// form (mail.QuotableSMTP) fails permanently. SMTPUTF8 is requested when an
// address is not ASCII; if the server lacks it, such a recipient (or, for
// the sender, every recipient) fails permanently with 5.6.7. BODY=8BITMIME
// goes with every MAIL to a server that offers 8BITMIME (go-smtp's choice;
// harmless for 7-bit mail); to one that does not, 8-bit mail is sent as it
// is, as qmail does. SIZE is sent when the body is an io.Seeker, as its
// stored size (slightly less than the wire size).
//
// Body: the stored message goes on the wire with CR LF line ends and
// dot-stuffing (go-smtp's writer stuffs; it is handed canonical CR LF text
// so that none of its own conversions apply). CR LF in the stored form stays
// one line end, and CRs before an LF are dropped (so CR CR LF never reaches
// the wire); a CR not followed by LF, which QMTP's CR mode can store, becomes
// a line end; a last line without LF gets CR LF (qmail-remote refuses such a
// message with #5.6.2; a gateway delivers it).
//
// Timeouts: ConnectTimeout (30 s, the same for the QMTP and QMQP clients)
// for the TCP connection, greeting and
// TLS set-up; CommandTimeout (5 min) for each reply and each write of the
// message; DataTimeout (10 min) for the reply after the final ".". The
// context of Send and Dial cancels at once.
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
//     word. serverConn watches the plaintext the client sends for that
//     sequence (plain.go) and the message is refused with 554 5.6.0, like
//     any other bare CR. When the line is "." CR CR LF, the reader also
//     takes the LF for the middle of a line and would wait for data the
//     client, which may have meant the line as its end, never sends: the
//     server ends the transfer as soon as go-smtp has read the line,
//     answers 554 5.6.0 and closes the connection.
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
//   - CR CR LF throws its end-of-data scanner off (see above); a timeout in
//     the middle of a BDAT chunk would be answered 554 with the error text,
//     so a timed-out read inside a transaction is a 421 reply error.
//   - Its client has no STARTTLS that keeps the EHLO name and allows going
//     on without TLS; the greeting, first EHLO and STARTTLS are done with
//     net/textproto and go-smtp's client takes over after the handshake. Its
//     Reset makes it say EHLO again before the next MAIL.
package smtp
