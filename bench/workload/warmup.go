package workload

import (
	"context"
	"fmt"
)

// WarmUp logs every user in once over IMAP on every node, a few at a
// time, before anything is measured: it proves the credentials work and
// fills each node's cache of verified logins (every target has one), so
// that later logins cost every target the same and the verification
// after smtp-ingest can look into every mailbox promptly.
func WarmUp(ctx context.Context, env Env) error {
	nodes := env.nodes()
	return eachUser(len(env.Users)*len(nodes), func(i int) error {
		u, node := i%len(env.Users), i/len(env.Users)
		c, err := dialIMAP(ctx, nodes[node].IMAP, env.TLS, env.Users[u])
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
