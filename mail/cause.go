package mail

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

// Cause names, in a few plain words, why a connection to a remote host
// failed: "connection refused", "no such host", "timeout after 1m0s",
// "certificate signed by unknown authority". timeout is the limit that was
// in force, said in a timeout's cause; 0 leaves it out. An error it does not
// recognise gives "": internal error text is never shown.
//
// Statuses carry the cause in their Text for the people who read logs,
// `qmgate queue show` and DSNs; the texts qmail's peers read on the wire
// are rendered by the servers from their own statuses and do not change.
func Cause(err error, timeout time.Duration) string {
	if err == nil {
		return ""
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		switch {
		case dnsErr.IsNotFound:
			return "no such host"
		case dnsErr.IsTimeout:
			return "timeout looking up the host name"
		}
		return "host name lookup failed"
	}
	if c := certCause(err); c != "" {
		return c
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by remote host"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "no route to host"
	case errors.Is(err, syscall.ENOENT), errors.Is(err, os.ErrNotExist):
		return "no such socket"
	case errors.Is(err, syscall.EACCES), errors.Is(err, os.ErrPermission):
		return "permission denied"
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		if timeout > 0 {
			return "timeout after " + timeout.String()
		}
		return "timeout"
	}
	var re tls.RecordHeaderError
	if errors.As(err, &re) {
		return "remote host does not speak TLS"
	}
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return "TLS handshake refused by remote host"
	}
	return ""
}

// certCause names a certificate verification failure.
func certCause(err error) string {
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return "certificate signed by unknown authority"
	}
	var he x509.HostnameError
	if errors.As(err, &he) {
		return "certificate is not valid for this host name"
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) {
		if ci.Reason == x509.Expired {
			return "certificate has expired or is not yet valid"
		}
		return "certificate is not valid"
	}
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		return "certificate verification failed"
	}
	return ""
}

// ConnectStatus is StatusConnectFailed (or, for a TLS handshake that
// failed, its TLS form) with the Cause of err added to the text:
// "could not connect to remote host: connection refused".
func ConnectStatus(err error, timeout time.Duration) Status {
	st := StatusConnectFailed
	if isTLSFailure(err) {
		st.Text = "TLS handshake with remote host failed"
	}
	return st.WithCause(Cause(err, timeout))
}

// WithCause returns s with ": cause" added to its text; an empty cause
// leaves s as it is.
func (s Status) WithCause(cause string) Status {
	if cause != "" {
		s.Text += ": " + cause
	}
	return s
}

// isTLSFailure reports whether err comes from a TLS handshake.
func isTLSFailure(err error) bool {
	if certCause(err) != "" {
		return true
	}
	var re tls.RecordHeaderError
	var ae tls.AlertError
	return errors.As(err, &re) || errors.As(err, &ae)
}
