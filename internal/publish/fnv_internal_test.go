package publish

import (
	"hash/fnv"
	"testing"
)

// TestFNV32aIsHashFNV: the allocation-free hash that picks an agent's
// worker is hash/fnv's FNV-1a, so every agent keeps its worker.
func TestFNV32aIsHashFNV(t *testing.T) {
	for _, s := range []string{"", "a", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "394382b6-a4d4-ee11-904c-00224808a166"} {
		h := fnv.New32a()
		_, _ = h.Write([]byte(s))
		if got, want := fnv32a(s), h.Sum32(); got != want {
			t.Errorf("fnv32a(%q) = %d, want %d", s, got, want)
		}
	}
}
