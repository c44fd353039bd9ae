package source_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

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
