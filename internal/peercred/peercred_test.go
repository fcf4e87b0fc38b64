package peercred

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// pair returns both ends of a connection over a unix socket in a fresh
// directory: the end accepted by the listener, and the dialled end.
func pair(t *testing.T) (accepted, dialled *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	a, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, d
}

func TestGetOwnProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skipf("peer credentials are tested on Linux; %s is compile-checked", runtime.GOOS)
	}
	a, d := pair(t)
	for name, c := range map[string]*net.UnixConn{"accepted": a, "dialled": d} {
		cred, err := Get(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := Cred{UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), PID: os.Getpid()}
		if cred != want {
			t.Errorf("%s: Get = %+v, want %+v", name, cred, want)
		}
	}
}

func TestGetRefusesWhatIsNotAPeer(t *testing.T) {
	if _, err := Get(nil); err == nil {
		t.Error("Get(nil) succeeded")
	}
	// A closed connection has no descriptor to ask.
	a, _ := pair(t)
	a.Close()
	if cred, err := Get(a); err == nil {
		t.Errorf("Get on a closed connection = %+v, want an error", cred)
	}
	// An unconnected datagram socket has no peer.
	if runtime.GOOS == "linux" {
		u, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "g"), Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		// Linux answers SO_PEERCRED on an unconnected socket with
		// invalid ids rather than an error; what matters is that they
		// are not read as root.
		if cred, err := Get(u); err == nil && cred.UID == 0 {
			t.Errorf("Get on an unconnected socket = %+v, read as root", cred)
		}
	}
}
