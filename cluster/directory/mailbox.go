package directory

import (
	"encoding/json"

	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// MailboxAttrs is the sealed part of a mailbox record. The directory
// seals the default mailboxes of a new user; the mail store all others.
type MailboxAttrs struct {
	Name       string `json:"n"`
	SpecialUse string `json:"s,omitempty"`
	Subscribed bool   `json:"sub,omitempty"`
}

// SealMailbox seals a mailbox's attributes for its owner.
func SealMailbox(s *seal.Sealer, k *UserKeys, user, mbox schema.ID, attrs MailboxAttrs) ([]byte, error) {
	b, err := json.Marshal(attrs)
	if err != nil {
		return nil, err
	}
	return s.Seal(k.ring, seal.KindMailbox, user[:], mbox[:], b)
}
