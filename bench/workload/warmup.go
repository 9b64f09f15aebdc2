package workload

import (
	"context"
	"fmt"
)

// WarmUp logs every user in once over IMAP, a few at a time, before
// anything is measured: it proves the credentials work and fills each
// target's cache of verified logins (both targets have one), so that
// later logins cost every target the same and the verification after
// smtp-ingest can look into every mailbox promptly.
func WarmUp(ctx context.Context, env Env) error {
	return eachUser(len(env.Users), func(u int) error {
		c, err := dialIMAP(ctx, env.Endpoints.IMAP, env.TLS, env.Users[u])
		if err != nil {
			return fmt.Errorf("warm-up login of %s: %w", env.Users[u].Address, err)
		}
		defer c.Close()
		if err := c.Logout().Wait(); err != nil {
			return fmt.Errorf("warm-up logout of %s: %w", env.Users[u].Address, err)
		}
		return nil
	})
}
