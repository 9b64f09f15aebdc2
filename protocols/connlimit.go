package protocols

import (
	"net"
	"net/netip"
	"sync"
)

// ConnLimiter caps concurrent connections, in total and per client
// address, across the listeners it wraps.
type ConnLimiter struct {
	max, perIP int

	mu    sync.Mutex
	total int
	byIP  map[netip.Addr]int
}

// NewConnLimiter returns a limiter; zero means no limit.
func NewConnLimiter(max, perIP int) *ConnLimiter {
	return &ConnLimiter{max: max, perIP: perIP, byIP: make(map[netip.Addr]int)}
}

// Refusal names the limit that turned a connection away; the values are
// the config keys of the limits and are used as metric labels.
type Refusal string

// The limits of a ConnLimiter.
const (
	RefusedMaxConnections Refusal = "max_connections"
	RefusedMaxPerIP       Refusal = "max_connections_per_ip"
)

// acquire takes a slot for ip, or reports which limit was reached.
func (l *ConnLimiter) acquire(ip netip.Addr) (bool, Refusal) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.max > 0 && l.total >= l.max:
		return false, RefusedMaxConnections
	case l.perIP > 0 && l.byIP[ip] >= l.perIP:
		return false, RefusedMaxPerIP
	}
	l.total++
	l.byIP[ip]++
	return true, ""
}

func (l *ConnLimiter) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

// Listener wraps ln so that connections over the limit are answered by
// reject (which should write the protocol's "too busy" line) and closed,
// and never reach the server.
func (l *ConnLimiter) Listener(ln net.Listener, reject func(net.Conn)) net.Listener {
	var r func(net.Conn, Refusal)
	if reject != nil {
		r = func(c net.Conn, _ Refusal) { reject(c) }
	}
	return l.ListenerWithReason(ln, r)
}

// ListenerWithReason is Listener with a reject callback that also learns
// which limit was reached.
func (l *ConnLimiter) ListenerWithReason(ln net.Listener, reject func(net.Conn, Refusal)) net.Listener {
	return &limitedListener{Listener: ln, l: l, reject: reject}
}

type limitedListener struct {
	net.Listener
	l      *ConnLimiter
	reject func(net.Conn, Refusal)
}

func (ll *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := RemoteIP(c.RemoteAddr())
		ok, why := ll.l.acquire(ip)
		if ok {
			return &limitedConn{Conn: c, release: func() { ll.l.release(ip) }}, nil
		}
		go func() {
			if ll.reject != nil {
				ll.reject(c, why)
			}
			c.Close()
		}()
	}
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// Unwrap returns the underlying connection, so a frontend can reach the
// *tls.Conn of an implicit-TLS listener.
func (c *limitedConn) Unwrap() net.Conn { return c.Conn }
