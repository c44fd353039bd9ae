package embeddednats

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFileName is the file in a data directory that records which process
// uses it.
const LockFileName = "bridge.lock"

// LockedError says that another process holds a data directory.
type LockedError struct {
	// Dir is the data directory.
	Dir string
	// PID is the holder's process ID, 0 when it could not be read.
	PID int
}

// Error names the directory and, when known, the process holding it.
func (e *LockedError) Error() string {
	holder := "another process"
	if e.PID > 0 {
		holder = "process " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("data directory %s is in use by %s (lock file %s)", e.Dir, holder, filepath.Join(e.Dir, LockFileName))
}

// DirLock is a held lock on a data directory. The operating system releases
// it when the process exits, however it exits.
type DirLock struct {
	f *os.File
}

// LockDataDir creates dir if needed and takes an exclusive lock on its lock
// file, writing this process's ID into it. When another process holds the
// lock it returns a *LockedError naming that process.
func LockDataDir(dir string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", path, err)
	}
	if err := tryLock(f); err != nil {
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, &LockedError{Dir: abs, PID: readPID(path)}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		if err != nil {
			unlock(f)
			f.Close()
			return nil, fmt.Errorf("write lock file %s: %w", path, err)
		}
	}
	return &DirLock{f: f}, nil
}

// Release gives the directory up. It is safe to call on a nil lock and more
// than once.
func (l *DirLock) Release() {
	if l == nil || l.f == nil {
		return
	}
	// The PID is left in the file: only the lock says who holds it.
	unlock(l.f)
	l.f.Close()
	l.f = nil
}

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// AddrInUse reports whether err says that a listen address is taken.
func AddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }

// CheckListen reports whether addr (host:port) can be listened on now, by
// listening and closing at once. Port 0 and -1 (any free port) always can.
func CheckListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("parse listen address %q: %w", addr, err)
	}
	if port == "0" || port == "-1" {
		return nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return err
	}
	return ln.Close()
}
