package source_test

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
)

// countingLister answers every read with one custom presence and counts the
// reads.
type countingLister struct{ reads atomic.Int32 }

func (l *countingLister) ListPresences(context.Context) ([]source.Presence, error) {
	l.reads.Add(1)
	return []source.Presence{{ID: "0b5cfa2a-7a55-4c39-9ea5-8c45e3a2c7b1", Name: "In a meeting", BaseStatus: source.BaseAway}}, nil
}

// TestCatalogueRefresherRunReloadsEachPeriod: Load is the load at start;
// Run's first load comes one period later, then one each period, until its
// context ends.
func TestCatalogueRefresherRunReloadsEachPeriod(t *testing.T) {
	const every = 50 * time.Millisecond
	lister := &countingLister{}
	cat := source.NewCatalogue(nil)
	ref := &source.CatalogueRefresher{Catalogue: cat, Lister: lister, Every: every}
	ctx, cancel := context.WithCancel(t.Context())
	started := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); ref.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for lister.reads.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("Run read the catalogue %d times in 10s, want 2", lister.reads.Load())
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
	}
	if took := time.Since(started); took < 2*every {
		t.Errorf("two reloads after %s, want at least two periods (%s): Run must not load at start", took, 2*every)
	}
	if got := cat.BaseStatus("0b5cfa2a-7a55-4c39-9ea5-8c45e3a2c7b1"); got != source.BaseAway {
		t.Errorf("catalogue after reloads: base status %q, want %q", got, source.BaseAway)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestPresenceCatalogue(t *testing.T) {
	const custom = "4f6b3a0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
	overrides, err := source.ParsePresenceMap(custom + "=busy - dnd, " + strings.ToUpper(available) + "=192360003")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"x=Away", custom + "=Lunch", custom, custom + "=Away," + custom + "=Busy", custom + "=192360006"} {
		if _, err := source.ParsePresenceMap(bad); err == nil {
			t.Errorf("ParsePresenceMap(%q) accepted", bad)
		}
	}
	if m, err := source.ParsePresenceMap(custom + "=inactive"); err != nil || m[custom] != source.BaseInactive {
		t.Errorf("ParsePresenceMap(inactive) = %v, %v; want Inactive", m, err)
	}
	opts := simulator.DefaultOptions()
	opts.Agents = 1
	sim, simURL := serveSim(t, opts)
	client := newClient(t, simURL, source.StaticToken(simulator.DefaultToken))
	cat := source.NewCatalogue(overrides)
	ref := &source.CatalogueRefresher{Catalogue: cat, Lister: client, Logger: slog.New(slog.DiscardHandler)}
	if err := ref.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	simPresences := sim.Presences()
	if cat.Len() < len(simPresences) {
		t.Errorf("catalogue knows %d presences, the organisation has %d", cat.Len(), len(simPresences))
	}
	for _, p := range simPresences {
		want, ok := source.BaseStatusForOption(p.BaseStatus)
		if !ok {
			t.Fatalf("simulator base status %v", p.BaseStatus)
		}
		if strings.EqualFold(p.ID, available) {
			want = source.BaseAway // overridden
		}
		if got := cat.BaseStatus(strings.ToLower(p.ID)); got != want {
			t.Errorf("presence %s (%s): base %q, want %q", p.ID, p.Name, got, want)
		}
	}
	if got := cat.BaseStatus(custom); got != source.BaseBusyDND {
		t.Errorf("override: %q", got)
	}
	// An organisation that refuses the read: the catalogue keeps what it had.
	_ = sim.SetFaults(simulator.Faults{PresencesStatus: 403})
	if err := ref.Load(t.Context()); err == nil || cat.BaseStatus(custom) != source.BaseBusyDND {
		t.Errorf("failed load: err %v, catalogue changed", err)
	}
}
