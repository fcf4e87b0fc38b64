// Package dkim signs outgoing mail with DKIM (RFC 6376), with RSA-SHA256 and
// Ed25519-SHA256 keys (RFC 8463), one or more keys per signing domain, each
// with its own selector.
//
// It owns key files (loading, permission checks, generation and the DNS TXT
// record to publish) and the choice of what to sign: the domain from the
// From: header (or a configured parent domain), the RFC 6376 section 5.4.1
// header set with From oversigned, relaxed/relaxed canonicalization and never
// an l= tag. The signature itself is computed by github.com/emersion/go-msgauth.
//
// It knows nothing of the queue, the protocols or configuration files: a caller
// decides which mail is signed (mail from its own clients, never mail that
// merely arrives for its domains), streams the message through a Writer once,
// and prepends the header fields the Writer returns. Only the header is held in
// memory; the body passes through.
package dkim
