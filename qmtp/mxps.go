package qmtp

import (
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
)

// IsQMTPPreference reports whether an MX preference is in MXPS's QMTP slice:
// 12800 <= pref <= 13055 and pref%16 == 1 (12801, 12817, …, 13041). Every
// other preference means SMTP (the MXPS proposal, cr.yp.to/proto/mxps.txt).
func IsQMTPPreference(pref uint16) bool {
	return pref >= 12800 && pref <= 13055 && pref%16 == 1
}

// Hop is one mail exchanger to try, in order.
type Hop struct {
	Host string // as DNS gave it, possibly with a trailing dot
	Pref uint16
	// QMTP: the preference is in the QMTP slice. Try QMTP on port 209
	// first; if and only if that connection attempt fails (Client.Dial
	// returns an error), try SMTP on port 25 of the same host. Once a QMTP
	// connection is made, its outcome stands: never retry the message over
	// SMTP after a QMTP delivery attempt, since the QMTP server may have
	// accepted it. Without QMTP: SMTP only.
	QMTP bool
}

// QMTPAddr returns host:209 for dialling the hop over QMTP.
func (h Hop) QMTPAddr() string {
	return net.JoinHostPort(strings.TrimSuffix(h.Host, "."), strconv.Itoa(DefaultPort))
}

// PlanMX orders MX records for delivery: by preference, lowest first, in
// random order among equal preferences (RFC 5321 5.1), each marked with
// whether MXPS says QMTP. Records are kept as they are otherwise; a null MX
// (RFC 7505, host ".") and the fallback to the domain's address records
// when there are no MX records at all are the caller's business.
func PlanMX(mxs []*net.MX) []Hop {
	return planMX(mxs, rand.Shuffle)
}

func planMX(mxs []*net.MX, shuffle func(n int, swap func(i, j int))) []Hop {
	hops := make([]Hop, 0, len(mxs))
	for _, mx := range mxs {
		if mx == nil {
			continue
		}
		hops = append(hops, Hop{Host: mx.Host, Pref: mx.Pref, QMTP: IsQMTPPreference(mx.Pref)})
	}
	shuffle(len(hops), func(i, j int) { hops[i], hops[j] = hops[j], hops[i] })
	slices.SortStableFunc(hops, func(a, b Hop) int { return int(a.Pref) - int(b.Pref) })
	return hops
}
