package relay

import (
	"context"
	"log/slog"
	"strings"

	"github.com/qmgate/qmgate/mail"
)

// refuse counts a refusal at the door and logs it, one line per refusal:
// who asked (client, proto, sender, the refused recipients), why (reason,
// the metric's word) and what was answered (the reply's text and code, in
// words: the wire's letters and SMTP digits stay on the wire). An
// acceptance does nothing.
func (h *Handlers) refuse(ctx context.Context, proto string, c *mail.ConnInfo, sender string, rcpts []string, st mail.Status) {
	if st.IsAccept() {
		return
	}
	reason := rejectReason(st)
	if h.Metrics != nil {
		h.Metrics.Rejected.WithLabelValues(proto, reason).Inc()
	}
	if h.Log == nil {
		return
	}
	h.Log.LogAttrs(ctx, slog.LevelInfo, "refused", slog.String("client", clientName(c)),
		slog.String("proto", proto), slog.String("from", sender), slog.String("rcpt", strings.Join(rcpts, ",")),
		slog.String("reason", reason), slog.String("reply", st.SMTPText()), slog.String("code", st.EnhancedCode()),
		slog.String("result", st.Outcome()))
}

// clientName is the client's address for logs: its IP, else whatever
// address the connection has (a unix socket's path).
func clientName(c *mail.ConnInfo) string {
	if c == nil {
		return ""
	}
	if ip := c.RemoteIP(); ip.IsValid() {
		return ip.String()
	}
	if c.RemoteAddr != nil {
		return c.RemoteAddr.String()
	}
	return ""
}
