package directory

import (
	"context"
	"strings"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// SendsAs reports whether user may send mail from address: the user's
// own address, an alias whose expansion reaches the user, or a
// plus-address of either (resolved as delivery resolves it, so an
// address that exactly belongs to someone else is never taken for a
// plus-address). A catch-all confers nothing: receiving a domain's
// unknown addresses does not make them the user's to send from. A
// negative answer from the local replica is confirmed after catching up
// with the meta leader, so an alias added a moment ago through another
// node counts.
func (d *Directory) SendsAs(ctx context.Context, user schema.ID, address string) (bool, error) {
	addr, domain, err := schema.CanonicalAddress(address)
	if err != nil {
		return false, err
	}
	check := func() (bool, error) {
		var owns bool
		err := d.c.ReadMeta(func(r *raftstore.Reader) error {
			v := d.routeView(r)
			cands := []string{addr}
			local := addr[:strings.LastIndexByte(addr, '@')]
			if plus := strings.IndexByte(local, '+'); plus > 0 {
				cands = append(cands, local[:plus]+"@"+domain)
			}
			for _, c := range cands {
				users, found, err := v.exact(c)
				if err != nil {
					return err
				}
				if !found {
					continue
				}
				for _, u := range users {
					if u.ID == user {
						owns = true
					}
				}
				return nil
			}
			return nil
		})
		return owns, err
	}
	owns, err := check()
	if err != nil || owns {
		return owns, err
	}
	if err := d.c.CatchUpMeta(ctx); err != nil {
		return false, err
	}
	return check()
}
