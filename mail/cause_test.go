package mail

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestCause(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "connection refused"},
		{&net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}}, "no such host"},
		{fmt.Errorf("dial: %w", context.DeadlineExceeded), "timeout after 1m0s"},
		{fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), "certificate signed by unknown authority"},
		{errors.New("something internal"), ""},
		{nil, ""},
	} {
		if got := Cause(tc.err, time.Minute); got != tc.want {
			t.Errorf("Cause(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	st := ConnectStatus(fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), 0)
	if st.Text != "TLS handshake with remote host failed: certificate signed by unknown authority" || st.EnhancedCode() != "4.4.1" {
		t.Errorf("ConnectStatus = %q %s", st.Text, st.EnhancedCode())
	}
	if st := ConnectStatus(errors.New("internal"), 0); st != StatusConnectFailed {
		t.Errorf("unknown cause: %v, want StatusConnectFailed unchanged", st)
	}
}
