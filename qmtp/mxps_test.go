package qmtp

import (
	"net"
	"slices"
	"testing"
)

func TestIsQMTPPreference(t *testing.T) {
	for pref, want := range map[uint16]bool{
		0: false, 1: false, 10: false, 17: false, 10000: false,
		12799: false, 12800: false, 12801: true, 12802: false, 12816: false,
		12817: true, 13041: true, 13055: false, 13057: false, 65535: false,
	} {
		if got := IsQMTPPreference(pref); got != want {
			t.Errorf("IsQMTPPreference(%d) = %v, want %v", pref, got, want)
		}
	}
	n := 0
	for p := range 1 << 16 {
		if IsQMTPPreference(uint16(p)) {
			n++
		}
	}
	if n != 16 {
		t.Errorf("%d QMTP preferences, want 16 (one per 16 in 12800..13055)", n)
	}
}

func TestPlanMX(t *testing.T) {
	mxs := []*net.MX{
		{Host: "c.example.", Pref: 20},
		{Host: "q1.example.", Pref: 12801},
		{Host: "a.example.", Pref: 10},
		nil,
		{Host: "b.example.", Pref: 10},
		{Host: "s.example.", Pref: 12800},
	}
	reverse := func(n int, swap func(i, j int)) {
		for i := 0; i < n/2; i++ {
			swap(i, n-1-i)
		}
	}
	got := planMX(mxs, reverse)
	want := []Hop{
		{"b.example.", 10, false}, {"a.example.", 10, false}, {"c.example.", 20, false},
		{"s.example.", 12800, false}, {"q1.example.", 12801, true},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("planMX = %v, want %v", got, want)
	}
	if a := want[4].QMTPAddr(); a != "q1.example:209" {
		t.Errorf("QMTPAddr = %q", a)
	}
	// Equal preferences come out in both orders over many plans.
	seen := map[string]bool{}
	for range 200 {
		seen[PlanMX(mxs)[0].Host] = true
	}
	if !seen["a.example."] || !seen["b.example."] {
		t.Errorf("equal preferences not shuffled: %v", seen)
	}
}
