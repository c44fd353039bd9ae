package feedstore_test

import (
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/feedstore"
	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/source"
)

// TestWatermarkRoundTrip checks that a saved watermark is loaded back by a
// store opened again, and that a foreign value is refused, not used.
func TestWatermarkRoundTrip(t *testing.T) {
	js := natstest.JetStream(t)
	ctx := t.Context()
	s, err := feedstore.Open(ctx, js, feedstore.Options{Bucket: "feed_test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, found, err := s.LoadWatermark(ctx); found || err != nil {
		t.Fatalf("empty bucket: found %v, err %v", found, err)
	}
	w := source.Watermark{CreatedOn: time.Date(2026, 1, 5, 9, 0, 7, 0, time.UTC), Seen: []string{"a", "b"}}
	if err := s.SaveWatermark(ctx, w); err != nil {
		t.Fatal(err)
	}
	again, err := feedstore.Open(ctx, js, feedstore.Options{Bucket: "feed_test"})
	if err != nil {
		t.Fatal(err)
	}
	got, found, err := again.LoadWatermark(ctx)
	if err != nil || !found || !got.CreatedOn.Equal(w.CreatedOn) || len(got.Seen) != 2 {
		t.Fatalf("loaded %+v, %v, %v; want %+v", got, found, err, w)
	}
	kv, err := js.KeyValue(ctx, "feed_test")
	if err != nil {
		t.Fatal(err)
	}
	for _, foreign := range []string{"not json", `{"createdOn":"0001-01-01T00:00:00Z"}`} {
		if _, err := kv.Put(ctx, feedstore.Key, []byte(foreign)); err != nil {
			t.Fatal(err)
		}
		if _, found, err := again.LoadWatermark(ctx); found || err == nil {
			t.Errorf("foreign value %q: found %v, err %v; want refused", foreign, found, err)
		}
	}
}
