package speaker

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// clearListenerMD5 removes the TCP MD5 key for peer from this process's BGP listening sockets.
// GoBGP v3 sets the key when a peer with a password is added but clears it on deletion only when
// the delete request carries the password, which its API cannot: after a password is removed
// (or a password peer's address is reused by one without), the listener goes on dropping the
// peer's unsigned SYNs, and a session the peer dials never comes up until the process restarts.
// The listeners are found by their local port among this process's descriptors. A key that is
// not there is no error.
func clearListenerMD5(port uint16, peer netip.Addr) error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("clear MD5 key of %v: %w", peer, err)
	}
	var errs []error
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || !isTCPListener(fd, port) {
			continue
		}
		// As GoBGP keys it: by the peer's own family (a listener of the other family answers
		// EINVAL or ENOENT, and had no key for it).
		var sig unix.TCPMD5Sig
		if peer.Is4() {
			sig.Addr.Family = unix.AF_INET
			a := peer.As4()
			copy(sig.Addr.Data[2:], a[:])
		} else {
			sig.Addr.Family = unix.AF_INET6
			a := peer.As16()
			copy(sig.Addr.Data[6:], a[:])
		}
		if err := unix.SetsockoptTCPMD5Sig(fd, unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("clear MD5 key of %v on listener fd %d: %w", peer, fd, err))
		}
	}
	return errors.Join(errs...)
}

// isTCPListener says whether fd is a listening TCP socket bound to port.
func isTCPListener(fd int, port uint16) bool {
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
		return false
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || v != unix.IPPROTO_TCP {
		return false
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port == int(port)
	case *unix.SockaddrInet6:
		return a.Port == int(port)
	}
	return false
}
