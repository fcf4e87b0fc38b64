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
	o := originOf(ctx, proto, c)
	if h.Metrics != nil {
		h.Metrics.Rejected.WithLabelValues(o.proto, reason).Inc()
	}
	if h.Log == nil {
		return
	}
	attrs := append(o.attrs(), slog.String("from", sender), slog.String("rcpt", strings.Join(rcpts, ",")),
		slog.String("reason", reason), slog.String("reply", st.SMTPText()), slog.String("code", st.EnhancedCode()),
		slog.String("result", st.Outcome()))
	if c != nil && c.AuthUser != "" {
		attrs = append(attrs, slog.String("auth", c.AuthUser))
	}
	h.Log.LogAttrs(ctx, slog.LevelInfo, "refused", attrs...)
}
