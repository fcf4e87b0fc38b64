package relay

import (
	"cmp"
	"fmt"
	"log/slog"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/ratelimit"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/relay/transport"
)

// Transport is what a route delivers through; the transports themselves
// live in relay/transport.
type Transport = transport.Transport

// BuildRouter makes the route table from the configuration; each route's
// transport comes from config.BuildTransport, the one place that turns
// configuration into transports.
func BuildRouter(cfg *config.Config, log *slog.Logger) (*Router, error) {
	r := &Router{}
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		t, err := config.BuildTransport(cfg, rc, log)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("route %s (%s): %w", rc.Name, rc.Via, err)
		}
		var pace *Pacing
		if rc.Rate != "" {
			rate, err := ratelimit.ParseRate(rc.Rate)
			if err != nil {
				r.Close()
				return nil, fmt.Errorf("route %s: rate: %w", rc.Name, err)
			}
			pace = NewPacing(rate, rc.Via == "mx", rc.ThrottleTexts)
		}
		var fb *Fallback
		if rc.Fallback != "" {
			fb = &Fallback{Route: rc.Fallback, After: rc.FallbackAfter, On: rc.FallbackOn}
		}
		r.Routes = append(r.Routes, &Route{
			Fallback:    fb,
			Pacing:      pace,
			Name:        cmp.Or(rc.Name, fmt.Sprintf("route[%d]", i)),
			Patterns:    mail.HostList(rc.Domains),
			Senders:     SenderList(rc.Senders),
			Via:         rc.Via,
			Transport:   t,
			Concurrency: rc.Concurrency,
		})
	}
	return r, nil
}
