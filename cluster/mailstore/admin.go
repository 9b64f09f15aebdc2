package mailstore

import (
	"context"
)

// AccountOf opens a user's account without the user's password, for the
// operator's tools that act on it (imports through the admin socket,
// which only the node's owner can reach). Close it after use.
func (s *Store) AccountOf(ctx context.Context, address string) (*Account, error) {
	u, err := s.dir.UserByAddress(ctx, address)
	if err != nil {
		return nil, err
	}
	return s.newAccount(u), nil
}
