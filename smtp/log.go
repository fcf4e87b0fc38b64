package smtp

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
)

// engineLog adapts go-smtp's logger to slog. go-smtp logs connection errors
// (failed TLS handshakes, resets) and recovered panics.
type engineLog struct {
	log    *slog.Logger
	client net.Addr
}

func (l engineLog) Printf(format string, v ...any) { l.Println(fmt.Sprintf(format, v...)) }

func (l engineLog) Println(v ...any) {
	msg := strings.TrimSpace(fmt.Sprintln(v...))
	if strings.Contains(msg, "panic") {
		l.log.Error("smtp session panic", "client", addrString(l.client), "err", msg)
		return
	}
	l.log.Info("smtp session error", "client", addrString(l.client), "err", msg)
}
