package workload

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/mailcluster/mailcluster/bench/corpus"
	"github.com/mailcluster/mailcluster/bench/pop3client"
	"github.com/mailcluster/mailcluster/bench/targets"
)

// Time bounds of single network operations; a workload's own duration
// bounds it as a whole.
const (
	dialTimeout    = 10 * time.Second
	commandTimeout = 60 * time.Second
	dataTimeout    = 3 * time.Minute
)

// Env is what every workload runs against: one started target, its
// users and the run's corpus. The same Env shape, and so the same client
// code, serves every target.
type Env struct {
	// Target names the target in logs.
	Target string
	// Endpoints are the target's (its first node's, for a target of
	// several nodes).
	Endpoints targets.Endpoints
	// Nodes are every node's endpoints for a target of several nodes,
	// each serving every user; empty for a target of one node. Workers
	// spread over them round-robin.
	Nodes []targets.Endpoints
	// TLS is the client configuration that verifies the target.
	TLS *tls.Config
	// Users are the accounts; corpus recipient i is Users[i].
	Users  []targets.User
	Corpus *corpus.Corpus
	Logger *slog.Logger
}

// nodes returns the endpoints of every node (Endpoints alone for a
// target of one node).
func (e Env) nodes() []targets.Endpoints {
	if len(e.Nodes) == 0 {
		return []targets.Endpoints{e.Endpoints}
	}
	return e.Nodes
}

// node returns the endpoints of node i modulo the number of nodes: worker
// i's node.
func (e Env) node(i int) targets.Endpoints {
	n := e.nodes()
	return n[i%len(n)]
}

func (e Env) logger() *slog.Logger {
	if e.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Logger.With("target", e.Target)
}

// userShares splits user indexes among n workers so that no two workers
// ever use the same user: POP3 locks a maildrop, and IMAP sessions of
// one user would race on the same messages.
func userShares(users, workers int) [][]int {
	shares := make([][]int, workers)
	for u := 0; u < users; u++ {
		shares[u%workers] = append(shares[u%workers], u)
	}
	return shares
}

// connectIMAP connects and starts TLS. ctx ending closes the connection.
func connectIMAP(ctx context.Context, addr string, cfg *tls.Config) (*imapclient.Client, error) {
	conn, err := dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	c, err := imapclient.NewStartTLS(conn, &imapclient.Options{TLSConfig: cfg})
	if err != nil {
		return nil, fmt.Errorf("imap starttls: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	go func() {
		<-c.Closed()
		stop()
	}()
	return c, nil
}

// loginIMAP authenticates with AUTHENTICATE PLAIN.
func loginIMAP(c *imapclient.Client, u targets.User) error {
	if err := c.Authenticate(sasl.NewPlainClient("", u.Address, u.Password)); err != nil {
		return fmt.Errorf("imap authenticate: %w", err)
	}
	return nil
}

// dialIMAP connects, starts TLS and logs in.
func dialIMAP(ctx context.Context, addr string, cfg *tls.Config, u targets.User) (*imapclient.Client, error) {
	c, err := connectIMAP(ctx, addr, cfg)
	if err != nil {
		return nil, err
	}
	if err := loginIMAP(c, u); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// dialPOP3 connects, issues STLS and authenticates with SASL PLAIN.
func dialPOP3(ctx context.Context, addr string, cfg *tls.Config, u targets.User) (*pop3client.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := pop3client.Dial(dctx, addr, nil)
	if err != nil {
		return nil, err
	}
	if err := c.StartTLS(dctx, cfg); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.AuthPlain(u.Address, u.Password); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func dial(ctx context.Context, addr string) (net.Conn, error) {
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, nil
}

// errNotLoopback refuses any address that is not a loopback IP: the
// harness only ever talks to servers it started on this machine.
var errNotLoopback = errors.New("not a loopback address")

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("address %q: %w", addr, errNotLoopback)
	}
	return nil
}
