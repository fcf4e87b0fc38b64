package config

import (
	"fmt"
	"log/slog"

	"github.com/qmgate/qmgate/internal/qmail/dotqmail"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/relay/transport"
)

// userControl turns a maildir or mbox route's settings for the users'
// control files (separator, folders, programs, srs_*) into the
// transport's fields. The SRS secrets file is read now, so a reload picks
// up a rotated secret.
func userControl(cfg *Config, rc *Route, log *slog.Logger) (transport.UserControl, error) {
	mb := transport.UserControl{
		NoFolders:    rc.Folders != nil && !*rc.Folders,
		Programs:     rc.Programs,
		LocalDomains: mail.HostList(cfg.RcptHosts),
		Log:          log,
	}
	if rc.Separator != "" {
		mb.Separator = rc.Separator[0]
	}
	if rc.SRSSecretFile != "" {
		secrets, err := dotqmail.ReadSecrets(rc.SRSSecretFile)
		if err != nil {
			return mb, fmt.Errorf("srs_secret_file: %w", err)
		}
		dom := SRSDomain(rc)
		if dom == "" {
			return mb, fmt.Errorf("srs_domain: not one of the route's exact domains")
		}
		mb.SRS = &dotqmail.SRS{Secrets: secrets, Domain: dom}
	}
	return mb, nil
}
