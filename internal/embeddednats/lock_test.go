package embeddednats_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/embeddednats"
)

func TestSecondServerOnTheSameDataDirIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	first, err := embeddednats.Start(ctx, embeddednats.Options{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	_, err = embeddednats.Start(ctx, embeddednats.Options{Listen: "127.0.0.1:-1", DataDir: dir})
	var locked *embeddednats.LockedError
	if !errors.As(err, &locked) {
		first.Shutdown()
		t.Fatalf("second start on %s: %v, want a *LockedError", dir, err)
	}
	if locked.PID != os.Getpid() || !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q: PID %d, want the holder %d and the path %s", err, locked.PID, os.Getpid(), dir)
	}
	first.Shutdown()
	again, err := embeddednats.Start(ctx, embeddednats.Options{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		t.Fatalf("start after the first server stopped: %v", err)
	}
	again.Shutdown()
}

func TestLockDataDir(t *testing.T) {
	dir := t.TempDir() + "/nested/data"
	l, err := embeddednats.LockDataDir(dir)
	if err != nil {
		t.Fatalf("lock: %v", err)
	}
	if _, err := embeddednats.LockDataDir(dir); err == nil {
		t.Fatal("a second lock on a locked directory succeeded")
	}
	l.Release()
	l.Release() // harmless
	l2, err := embeddednats.LockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l2.Release()
}

func TestStartRefusesAnAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	// A ready timeout far beyond the test's own deadline: the refusal must
	// come from the listen check, not from waiting.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = embeddednats.Start(ctx, embeddednats.Options{Listen: ln.Addr().String(), DataDir: dir, ReadyTimeout: time.Hour})
	if !embeddednats.AddrInUse(err) {
		t.Fatalf("start on a taken address: %v, want address in use", err)
	}
	if !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Errorf("error %q does not name %s", err, ln.Addr())
	}
	// Nothing was left holding the directory.
	l, err := embeddednats.LockDataDir(dir)
	if err != nil {
		t.Fatalf("data directory still locked after a failed start: %v", err)
	}
	l.Release()
}
