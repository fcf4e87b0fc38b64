package relay

import (
	"errors"
	"log/slog"

	"github.com/qmgate/qmgate/internal/config"
)

// Replaced when the SMTP client lands.
func newSMTPTransport(cfg *config.Config, rc *config.Route, log *slog.Logger) (Transport, error) {
	return nil, errors.New("smtp transport not built yet")
}

func newMXTransport(cfg *config.Config, rc *config.Route, log *slog.Logger) (Transport, error) {
	return nil, errors.New("mx transport not built yet")
}
