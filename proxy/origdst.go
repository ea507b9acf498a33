package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (and IP6T_SO_ORIGINAL_DST): the address
// a connection had before iptables REDIRECT rewrote it.
const soOriginalDst = 80

// OriginalDst returns where a redirected connection was going. For a
// connection that was not redirected it returns the local address.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, errors.New("original dst: not a TCP connection")
	}
	var dst netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		if local.IP.To4() != nil {
			// sockaddr_in fits the 20 bytes of an ipv6_mreq.
			mreq, e := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, soOriginalDst)
			if e != nil {
				serr = e
				return
			}
			b := mreq.Multiaddr[:]
			port := binary.BigEndian.Uint16(b[2:4])
			dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port)
			return
		}
		// sockaddr_in6 fits the 32 bytes of an ip6_mtuinfo.
		info, e := unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, soOriginalDst)
		if e != nil {
			serr = e
			return
		}
		port := info.Addr.Port>>8 | info.Addr.Port<<8
		dst = netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr).Unmap(), port)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original dst: %w", err)
	}
	return dst, nil
}

// originalDst is OriginalDst; tests route connections that were not
// redirected through it.
var originalDst = OriginalDst
