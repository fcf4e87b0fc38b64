// Package qmtp speaks D. J. Bernstein's Quick Mail Transfer Protocol (QMTP,
// TCP port 209): a Server that receives packages and hands each to a Handler,
// a pipelining Client that sends them, and the MXPS rule that says which MX
// records mean QMTP.
//
// It is laid out like net/http: a Server whose exported fields are its
// knobs, a one-method Handler, Serve/ServeTLS/ServeConn, Shutdown and Close;
// a Client with Dial and a Conn with Send, plus a package-level Send.
//
// It is not a queue, a policy engine or an SMTP anything: the Handler decides
// what to accept and where to store it (qmgate's relay wires it to the
// durable queue), and the SMTP half of MXPS lives in the smtp package.
//
// # The protocol
//
// A client sends any number of packages on one connection without waiting
// for answers. A package is three netstrings: the message, the envelope
// sender, and a netstring holding one netstring per recipient. The server
// answers each package, after its last byte, with exactly one reply per
// recipient in the same order, duplicates included: a netstring starting
// with K (accepted, with the same duty as an SMTP 250 after DATA), Z
// (temporary failure) or D (permanent failure). A reply that never comes is
// a temporary failure. Addresses are raw bytes, never SMTP-quoted.
//
// The first byte of the message is its mode byte, counted in the length:
//
//   - '\n' (encoding #2): the message has LF line ends and is stored
//     verbatim.
//   - '\r' (encoding #1): CRLF line ends. The server converts exactly as
//     qmail-qmtpd does: each CR LF pair becomes LF, a CR not followed by LF
//     is kept (so CR CR LF becomes CR LF), a CR at the very end is kept, and
//     bare LFs pass through. The conversion streams, and a CR that ends one
//     network read is decided when the next byte arrives.
//
// Any other mode byte, and a zero-length message netstring (which has no
// mode byte; the empty message is "1:\n,"), is a protocol error.
//
// # The server
//
// Each connection is served in its own goroutine, package after package:
//
//   - The server reads the message length and the mode byte, then calls the
//     Handler with a Request whose Body streams the message. QMTP sends the
//     message before the envelope, as qmail-queue reads fd 0 before fd 1, so
//     the Handler reads Body first and calls Request.Envelope afterwards.
//   - Replies are buffered while more input is already waiting and flushed
//     before every read that could block, so a pipelining client never
//     stalls and a burst of packages is answered in few writes. Input that
//     has arrived is never discarded while replying. Nothing of a package's
//     replies is written before its final byte (the recipient list's outer
//     comma).
//   - A protocol error (a malformed netstring, a non-digit or overlong
//     length, a missing comma, a zero-length message, an unknown mode byte,
//     an empty recipient list) closes the connection without a reply to that
//     package; replies owed to earlier packages are sent first. qmail
//     answers an empty recipient list with nothing and waits, hanging its
//     client; we close instead. Those errors wrap ErrProtocol.
//   - A client that goes away mid-package gets nothing: the Handler sees a
//     Body or Envelope error that is not a mail.Status and must not commit.
//   - A Handler panic is recovered and logged; the package's well-formed
//     recipients get a temporary failure and the session goes on.
//
// # The Handler contract
//
// ServeQMTP(ctx, req) returns one mail.Status per element of the
// Recipients that req.Envelope() returned:
//
//   - Body is the server's Received line (qmail's format, "with QMTP" or
//     "with QMTPS", built by mail.ConnInfo.Received with Server.Hostname as
//     the "by" name when ConnInfo.LocalHost is empty), then the message as
//     it is to be stored. It ends in io.EOF, or in mail.StatusTooBig or
//     mail.StatusTooManyHops once a limit is crossed, or in another error if
//     the connection failed.
//   - Envelope drains what the Handler did not read of Body (still counting
//     size and hops), then reads the sender and the recipients up to the
//     last byte of the package. Recipients holds only the well-formed ones:
//     shorter than mail.MaxAddressLen (1000) bytes and free of NUL, at most
//     MaxRecipients of them. The server itself answers the malformed ones
//     with mail.StatusBadRecipient and the ones past MaxRecipients with a
//     temporary failure, and merges all replies back into wire order. An
//     empty recipient ("0:,") is well-formed here, as in qmail: policy
//     should refuse it.
//   - If Envelope returns nil, the package is complete and within limits.
//     Zero Recipients is possible (every recipient was malformed); the
//     Handler is still called and must not commit.
//   - If Envelope returns a mail.Status (StatusTooBig, StatusTooManyHops,
//     StatusBadSender for a sender of 1000 bytes or more or with a NUL), the
//     package was read to its end but must not be committed: every
//     recipient gets that status, whatever the Handler returns. So a
//     Handler that ignores errors still cannot cause an acceptance.
//   - If Envelope returns any other error, the package is broken or cut off
//     and the connection closes without a reply.
//   - Missing statuses are temporary failures; extra ones are ignored. A
//     Handler that never calls Envelope cannot have committed the message,
//     so all its recipients get a temporary failure.
//   - Return only K for recipients whose message is durably stored; the
//     client is entitled to forget the message on K. Unknown trouble is a
//     temporary failure (mail.StatusOf does this for errors).
//   - The Request must not be used after ServeQMTP returns. ctx is
//     cancelled when the connection ends or the server is Closed.
//
// # Limits
//
// Every limit is a Server field whose zero value means a safe default (the
// Default constants); negative means none. No declared length allocates
// memory: bodies stream, addresses are read into a fixed 1000-byte buffer,
// and longer ones are skipped, never stored. A connection over MaxConns or
// MaxConnsPerIP gets one "Z…(#4.3.2)" reply and is closed. QMTPS (implicit
// TLS, as s/qmail runs it under sslserver) has no registered port: ServeTLS
// serves any listener, and a Client with TLSConfig needs an explicit port.
//
// The Client and Conn document themselves: Send pipelines the packages and
// always returns one Status per recipient, 'D' being the only permanent one.
//
// # MXPS
//
// IsQMTPPreference tells whether an MX preference is in the QMTP slice
// (12800..13055 with pref%16 == 1), and PlanMX orders MX records by
// preference, shuffling equal ones. For a QMTP hop, dial port 209 first; if
// and only if that connection attempt fails, deliver by SMTP to port 25 of
// the same host. Once a QMTP connection was made, its outcome stands: never
// repeat the delivery over SMTP, since the QMTP server may have accepted it.
package qmtp
