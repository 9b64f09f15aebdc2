package protocols

import (
	"context"
	"net"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// CheckSecret runs check, a credential check that is not a mail login
// (an admin API token), under the guard's per-address limit: a client
// address that is locked out is refused without running check, a
// refusal counts as a failure of the address (and may start its
// lockout), both answer after the failure delay, and a success resets
// the address's count. The outcome is reported to the observer under
// protocol. It returns nil when check accepted, an error that is
// schema.ErrAuthFailed (and ErrTooManyFailures for a locked address)
// when it refused, and check's own error otherwise.
func (g *AuthGuard) CheckSecret(ctx context.Context, protocol string, remote net.Addr, check func() (bool, error)) error {
	start := time.Now() // the real clock: the delay is a real wait
	ip := RemoteIP(remote)
	client := clientKey(ip)
	now := g.now()
	a := Attempt{Protocol: protocol, Remote: remote}
	locked := g.failures.Locked(addressKey(client), now)
	ok := false
	if !locked {
		var err error
		if ok, err = check(); err != nil {
			g.obs.LoginError(protocol)
			return err
		}
	}
	if !ok {
		g.failed(a, ip, client, "", false, now)
		g.obs.LoginFailed(protocol, locked)
		g.delay(ctx, start)
		if locked {
			return errLocked
		}
		return schema.ErrAuthFailed
	}
	g.obs.LoginSucceeded(protocol)
	g.failures.Reset(addressKey(client), now)
	return nil
}
