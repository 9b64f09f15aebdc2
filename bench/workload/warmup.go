package workload

import (
	"context"
	"fmt"
	"sync"
)

// WarmUp logs every user in once over IMAP, a few at a time, before
// anything is measured: it proves the credentials work and fills each
// target's cache of verified logins (both targets have one), so that
// later logins cost every target the same and the verification after
// smtp-ingest can look into every mailbox promptly.
func WarmUp(ctx context.Context, env Env) error {
	users := make(chan int, len(env.Users))
	for u := range env.Users {
		users <- u
	}
	close(users)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < verifyWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range users {
				c, err := dialIMAP(ctx, env.Endpoints.IMAP, env.TLS, env.Users[u])
				if err == nil {
					err = c.Logout().Wait()
					c.Close()
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("warm-up login of %s: %w", env.Users[u].Address, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}
