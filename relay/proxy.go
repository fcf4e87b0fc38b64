package relay

import (
	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/serve"
)

// proxyPolicy returns the PROXY protocol policy of a TCP listener whose
// section names trusted balancers (proxy_from), and false for any other.
func (h *Hub) proxyPolicy(bl *boundListener) (serve.ProxyPolicy, bool) {
	if bl.unix != "" {
		return serve.ProxyPolicy{}, false
	}
	var lp config.ListenProxy
	switch bl.kind {
	case "qmqp":
		lp = h.cfg.QMQP.ListenProxy
	case "qmtp", "qmtps":
		lp = h.cfg.QMTP.ListenProxy
	default:
		lp = h.cfg.SMTP.ListenProxy
	}
	if len(lp.ProxyFrom) == 0 {
		return serve.ProxyPolicy{}, false
	}
	p := serve.ProxyPolicy{Required: lp.ProxyRequired, Log: h.log.With("listener", bl.kind, "addr", bl.addr)}
	for _, s := range lp.ProxyFrom {
		if n, err := config.ParsePrefix(s); err == nil { // checked by Validate
			p.From = append(p.From, n)
		}
	}
	return p, true
}
