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

// acquire takes a slot for ip, or reports false when a limit is reached.
func (l *ConnLimiter) acquire(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.max > 0 && l.total >= l.max) || (l.perIP > 0 && l.byIP[ip] >= l.perIP) {
		return false
	}
	l.total++
	l.byIP[ip]++
	return true
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
	return &limitedListener{Listener: ln, l: l, reject: reject}
}

type limitedListener struct {
	net.Listener
	l      *ConnLimiter
	reject func(net.Conn)
}

func (ll *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := RemoteIP(c.RemoteAddr())
		if ll.l.acquire(ip) {
			return &limitedConn{Conn: c, release: func() { ll.l.release(ip) }}, nil
		}
		go func() {
			if ll.reject != nil {
				ll.reject(c)
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
