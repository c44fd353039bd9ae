package main

import (
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// TestMemoryLimitFollowsTheContainer: the soft memory limit is 90 % of the
// container's (a provider stands for the cgroup), AUTOMEMLIMIT changes the
// ratio or turns it off, GOMEMLIMIT wins, and no container limit leaves Go's
// default.
func TestMemoryLimitFollowsTheContainer(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name     string
		env      map[string]string
		provider memlimit.Provider
		want     int64
	}{
		{"90 % of the container's limit", nil, memlimit.Limit(200 * mib), 180 * mib},
		{"AUTOMEMLIMIT sets the ratio", map[string]string{"AUTOMEMLIMIT": "0.5"}, memlimit.Limit(200 * mib), 100 * mib},
		{"AUTOMEMLIMIT off", map[string]string{"AUTOMEMLIMIT": "off"}, memlimit.Limit(200 * mib), math.MaxInt64},
		{"GOMEMLIMIT wins", map[string]string{"GOMEMLIMIT": "64MiB"}, memlimit.Limit(200 * mib), math.MaxInt64}, // the runtime read it at start, before the test set it
		{"no container limit", nil, func() (uint64, error) { return 0, memlimit.ErrNoLimit }, math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := debug.SetMemoryLimit(math.MaxInt64)
			t.Cleanup(func() { debug.SetMemoryLimit(before) })
			for _, k := range []string{"GOMEMLIMIT", "AUTOMEMLIMIT"} {
				t.Setenv(k, "") // restored after the test
				os.Unsetenv(k)
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			if got := setMemoryLimit(slog.New(slog.DiscardHandler), tt.provider); got != tt.want {
				t.Errorf("setMemoryLimit = %d, want %d", got, tt.want)
			}
			if got := debug.SetMemoryLimit(-1); got != tt.want {
				t.Errorf("the runtime's limit is %d, want %d", got, tt.want)
			}
		})
	}
}
