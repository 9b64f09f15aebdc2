package workload

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/emersion/go-imap/v2"
)

// warmUpPatience bounds how long the warm-up tries a login again while
// the server answers that it is temporarily unavailable.
const warmUpPatience = 30 * time.Second

// unavailable reports whether err is a server's NO [UNAVAILABLE]
// (RFC 5530): a temporary failure, to be tried again.
func unavailable(err error) bool {
	var ie *imap.Error
	return errors.As(err, &ie) && ie.Code == imap.ResponseCodeUnavailable
}

// WarmUp logs every user in once over IMAP on every node, a few at a
// time, before anything is measured: it proves the credentials work and
// fills each node's cache of verified logins (every target has one), so
// that later logins cost every target the same and the verification
// after smtp-ingest can look into every mailbox promptly.
//
// A login answered NO [UNAVAILABLE] is tried again, as a mail client
// would, for up to warmUpPatience: right after a cluster started again,
// with every shard led, a node has answered so (the cause is not
// verified: docs/architecture.md, thirty-fourth round).
func WarmUp(ctx context.Context, env Env) error {
	nodes := env.nodes()
	return eachUser(len(env.Users)*len(nodes), func(i int) error {
		u, node := i%len(env.Users), i/len(env.Users)
		c, err := dialIMAP(ctx, nodes[node].IMAP, env.TLS, env.Users[u])
		for end := time.Now().Add(warmUpPatience); err != nil && unavailable(err) && time.Now().Before(end); {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
			c, err = dialIMAP(ctx, nodes[node].IMAP, env.TLS, env.Users[u])
		}
		if err != nil {
			return fmt.Errorf("warm-up login of %s on %s: %w", env.Users[u].Address, nodes[node].IMAP, err)
		}
		defer c.Close()
		if err := c.Logout().Wait(); err != nil {
			return fmt.Errorf("warm-up logout of %s: %w", env.Users[u].Address, err)
		}
		return nil
	})
}
