package testpeer

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
)

// Reserve binds a TCP socket to ip:port (port 0: a free port the kernel
// picks) and never listens on it, and returns the address and the function
// that closes the socket.
//
// Until then the port is the test's: connections to it are refused, no
// socket bound to port 0 (a listener on "127.0.0.1:0" here or in another
// test binary) and no outgoing connection's source port can take it, and a
// second Reserve(ip, 0) returns another port. The server meant to have it
// can bind it all the same, as long as it sets SO_REUSEADDR, as Go's
// net.Listen, Postfix (master, smtp-sink) and tcpserver do: Linux lets
// sockets that all set it share an address as long as none of the others
// listens. A port picked by listening on port 0 and closing the listener
// has no such protection: anything that binds port 0 before the server
// starts may be given it.
func Reserve(ip string, port int) (addr string, release func(), err error) {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is4() {
		return "", nil, fmt.Errorf("reserve %s: not an IPv4 address", ip)
	}
	// Close-on-exec at once, under ForkLock like the net package's own
	// sockets: the peers the tests start must not inherit it.
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return "", nil, fmt.Errorf("reserve %s: socket: %w", ip, err)
	}
	fail := func(op string, err error) (string, func(), error) {
		syscall.Close(fd)
		return "", nil, fmt.Errorf("reserve %s:%d: %s: %w", ip, port, op, err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: a.As4()}); err != nil {
		return fail("bind", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	sa4, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		return fail("getsockname", fmt.Errorf("address %T", sa))
	}
	addr = net.JoinHostPort(ip, strconv.Itoa(sa4.Port))
	return addr, sync.OnceFunc(func() { syscall.Close(fd) }), nil
}
