// Package qmqp implements QMQP, the Quick Mail Queueing Protocol (TCP port
// 628): a Server that hands each message to a Handler, and a Client that
// sends messages to an ordered list of servers. It is the protocol between
// qmail's "mini-qmail" nullclients (qmail-qmqpc, nullmailer's qmqp module)
// and a central hub (qmail-qmqpd, Postfix's qmqpd, mailfront).
//
// The package knows nothing of queues: a Handler decides what accepting a
// message means. It is shaped like net/http (Server, Handler, HandlerFunc,
// Request, Serve, ServeConn, Shutdown, Close), in parallel with package qmtp.
//
// # The protocol
//
// One message per connection. The client sends one netstring whose data is
// three or more netstrings: the message, the envelope sender, and each
// recipient:
//
//	42:5:test\n,13:a@example.com,13:b@example.com,,
//
// The message comes first, in LF form, with no mode byte (unlike QMTP) and
// no line-end conversion. Addresses are raw bytes, not SMTP-quoted; the
// sender may be empty. The server answers with one netstring, K (accepted,
// with the RFC 1123 5.3.3 duty), Z (temporary failure) or D (permanent
// failure) followed by text, and closes:
//
//	10:Kok queued,
//
// There is one reply for the whole message: a server cannot accept some
// recipients and refuse others. A reply that does not arrive is a temporary
// failure. QMQP has no authentication at all; access is by client address.
//
// # Server
//
// A Server is deny-all until Allow (or AllowFunc) names its clients: QMQP
// relays anywhere, so an open QMQP port is an open relay (qmail-qmqpd(8):
// "It should be invoked only for connections from preauthorized users";
// Postfix's qmqpd_authorized_clients works the same way). SetAllow replaces
// the list while the server runs, for a daemon reloading on SIGHUP.
// Connections on unix-domain sockets carry no address and are always
// allowed; the socket file's permissions are their access control.
//
// For each connection the server, in order:
//
//  1. Refuses a client that is not allowed with one D reply,
//     "Dclient 192.0.2.7 is not authorized to use this service (#5.7.1)",
//     before reading anything, and closes.
//  2. Refuses a client over MaxConns or MaxConnsPerIP with one
//     "Ztoo many connections, try again later (#4.3.2)", the same way.
//  3. Calls ConnContext, if set, to complete the mail.ConnInfo (reverse
//     DNS name, relay rights, ...).
//  4. Reads the outer length and the message length, and calls the
//     Handler with a Request whose Body streams the message from the
//     connection. A message whose declared length is over MaxMessageBytes
//     never reaches the Handler.
//  5. Reads whatever the handler left of the request, to the outer comma.
//  6. Replies and closes: a half-close, then a short bounded wait for the
//     client's close, so that unread input cannot make the kernel reset the
//     connection under the reply.
//
// The refusals of steps 1 and 2 are the only replies sent before the last
// byte of the request; every other reply waits for it, as the specification
// requires. A request that
// breaks the grammar (a bad length, a missing comma, an inner netstring that
// overruns the outer one, a connection that ends early) gets no reply at all:
// the connection is closed and the client, seeing no reply, keeps the message
// for a retry. The outer length is the contract: every byte of the inner
// netstrings is charged against it, and a declared length never allocates
// memory before its bytes arrive. The whole session is bounded by
// ReadTimeout and WriteTimeout per I/O and by SessionTimeout (one hour).
//
// # Handler contract
//
// QMQP sends the body before the envelope, so a Handler works like
// qmail-queue reading fd 0 and then fd 1:
//
//	func (q *Queue) ServeQMQP(ctx context.Context, req *qmqp.Request) mail.Status {
//		f := q.newSpoolFile()
//		if _, err := io.Copy(f, req.Body); err != nil { // Received line + message
//			f.Abort()
//			req.Envelope()
//			return mail.StatusOf(err)
//		}
//		env, err := req.Envelope() // sender and recipients, to the last byte
//		if err != nil {
//			f.Abort()
//			return mail.StatusOf(err)
//		}
//		return q.commit(f, env) // K only once durable
//	}
//
// Body yields the server's Received line first ("Received: from HOST (IP)\n
// by NAME with QMQP; date\n", qmail's form, built by mail.ConnInfo.Received),
// then the message bytes exactly as sent. It passes through a
// mail.BodyReader: once the hop limit (MaxHops Received:/Delivered-To: lines,
// 100 by default) is crossed, Read fails with mail.StatusTooManyHops.
//
// Envelope reads the rest of the request. The handler must commit only when
// it returns no error. A mail.Status error is a refusal that the server sends
// whatever the handler returns:
//
//	message over MaxMessageBytes   D sorry, that message size exceeds my databytes limit (#5.3.4)
//	too many hops                  D too many hops, this message is looping (#5.4.6)
//	address >= 1000 bytes, a NUL,  D sorry, I can't accept addresses like that (#5.1.3)
//	  or an empty recipient
//	more than MaxRecipients        D too many recipients (#5.5.3)
//	no recipients                  D no recipients (#5.5.1)
//
// Any other error means the connection failed or the request was malformed
// (errors.Is(err, ErrMalformed)), and no reply will be sent. A handler that
// never calls Envelope (a benchmark's no-op) still gets these checks: the
// server reads the rest itself before replying. A panicking handler is
// recovered and logged, and the client gets "Ztemporary failure (#4.3.0)".
// A nil Handler answers Z to everything. The Request must not be used after
// ServeQMQP returns.
//
// Where this differs from qmail-qmqpd, on purpose: zero recipients and empty
// recipients are refused (qmail says K to a message that goes nowhere); there
// is a size limit and a hop limit (qmail has neither); the server enforces an
// allow list itself (qmail relies on tcpserver rules). Where it differs from
// Postfix's qmqpd: refusals other than access and connection limits wait for
// the whole request, and there is no one-second delay before negative
// replies.
//
// # Serving
//
// Serve takes a TCP or unix-domain listener; ServeConn serves one
// connection someone else accepted, or stdin/stdout under tcpserver (the
// tests do exactly this under ucspi-tcp's tcpserver).
//
// Logging goes to ErrorLog (slog.Default when nil), one line per event with
// the keys proto, client, size, rcpts, status and delay: accepted messages
// at Debug (the queue logs them with their id), refusals and dropped requests
// at Info, connection limits at Warn, handler panics at Error. A client that
// resets the connection after the reply (Postfix's qmqp-source closes with
// SO_LINGER 0) is routine and not logged above Debug.
//
// # Client
//
// A Client tries its servers in order and moves on only when a connection
// cannot be made (Client documents the rule, Send the rest). The result
// says what a qmail-qmqpc replacement needs for its exit code:
//
//	err == nil                      the server replied: Status is K (0), Z (71) or D (31)
//	*ConnectError                   no server could be connected: 72 if
//	                                ConnectError.Timeout(), else 73; nothing was sent
//	*TransferError                  connected, then failed: 74; no other server tried
//	ErrInvalidEnvelope              the envelope can never be sent (permanent)
//
// # What this package is not
//
// It has no TLS (no QMQP-over-TLS standard exists; nullmailer refuses
// STARTTLS for QMQP and needs an explicit port for TLS), no recipient
// policy (rcpthosts does not apply to QMQP: an allowed client relays
// anywhere), and no queue.
package qmqp
