// Package dkim signs outgoing mail with DKIM (RFC 6376), with RSA-SHA256 and
// Ed25519-SHA256 keys (RFC 8463), one or more keys per signing domain, each
// with its own selector.
//
// It owns key files (loading, permission checks, generation and the DNS TXT
// record to publish) and the choice of what to sign: the domain from the
// From: header (or a configured parent domain), the RFC 6376 section 5.4.1
// header set with From oversigned, relaxed/relaxed canonicalization and never
// an l= tag. The canonicalization, hashing and the DKIM-Signature field are
// written here (canon.go, sig.go): go-msgauth's Signer costs several times
// an Ed25519 signature in plumbing. github.com/emersion/go-msgauth still
// checks a signature of ours that a message already carries, and verifies
// every signature in the tests.
//
// It knows nothing of the queue, the protocols or configuration files: a caller
// decides which mail is signed (mail from its own clients, never mail that
// merely arrives for its domains) and signs each message once, at acceptance.
//
// Streaming: a signature covers the whole body but goes in front of it, so
// the body is read before the signature exists. Rather than hold the message,
// the Writer is fed once, beside the queue (io.MultiWriter while the message
// streams to disk); only the header is kept (bounded), and Close returns the
// DKIM-Signature fields, which the caller stores with the message and puts in
// front of it when it sends it on. Signer.SignTo does the same for a spool
// file it can read twice. Rewriting (package rewrite) comes before signing,
// since it may change the From: field.
package dkim
