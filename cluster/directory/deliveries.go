package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// A user's delivery records (the metadata of each SMTP message
// transaction that reached the user, or that the user submitted) are a
// time log like the login history, "deliveries/<user id>/<unix ns>-<random>",
// but sealed under the user's own key: deleting the user (destroying the
// key) makes them unreadable wherever a copy is, backups included. They
// are pruned by age (the node's delivery_metadata_retention) and with
// their user.
const deliveriesPrefix = "deliveries/"

// maxDeliveryRecipients bounds the recipients kept in one record.
const maxDeliveryRecipients = 100

// DeliveryRecord is one delivery as a user's records keep it: never any
// of the message's content.
type DeliveryRecord struct {
	Time time.Time `json:"time"`
	Node string    `json:"node"`
	// Port is "mx" or "submission".
	Port string `json:"port"`
	// Direction is "in" in a recipient's records, "out" in the
	// submitting user's.
	Direction string `json:"direction"`
	// Remote is the sending client's IP address.
	Remote string `json:"remote,omitempty"`
	// From is the envelope sender ("" for the null reverse-path).
	From string `json:"from"`
	// Recipients are the envelope recipients: in a recipient's record
	// those that reached this user, in the submitter's all of them.
	Recipients []string `json:"recipients"`
	MessageID  string   `json:"message_id,omitempty"`
	// TLS is the TLS version and cipher suite ("" without TLS).
	TLS string `json:"tls,omitempty"`
	// Result is "accepted", "temporary" or "permanent"; Reply the reply
	// code and enhanced code, "250 2.0.0".
	Result string `json:"result"`
	Reply  string `json:"reply,omitempty"`
}

func deliveriesKeyPrefix(user schema.ID) string { return deliveriesPrefix + user.String() + "/" }

// sealUserSetting seals v under the user's own key, bound to the user and
// the setting's key.
func (d *Directory) sealUserSetting(u *User, key string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return d.sealer.Seal(u.Keys.Ring(), seal.KindUserValue, u.ID[:], []byte(key), b)
}

// RecordDelivery appends rec to the records of every user a recipient
// resolves to (Direction "in", with the recipients that led to that
// user) and, when submitter is a user's address, to the submitter's
// (Direction "out", every recipient). Recipients that are no local user
// are only named in the submitter's record. It returns how many records
// it wrote.
func (d *Directory) RecordDelivery(ctx context.Context, rec DeliveryRecord, submitter string) (int, error) {
	if len(rec.Recipients) > maxDeliveryRecipients {
		rec.Recipients = rec.Recipients[:maxDeliveryRecipients]
	}
	type target struct {
		u     *User
		rcpts []string
	}
	var targets []*target
	byUser := map[schema.ID]*target{}
	for _, r := range rec.Recipients {
		users, err := d.ResolveRecipients(ctx, r)
		if errors.Is(err, schema.ErrUnavailable) || ctx.Err() != nil {
			return 0, fmt.Errorf("record delivery: %w", err)
		}
		if err != nil {
			continue // not a local user: named in the submitter's record only
		}
		for _, u := range users {
			t := byUser[u.ID]
			if t == nil {
				t = &target{u: u}
				byUser[u.ID] = t
				targets = append(targets, t)
			}
			t.rcpts = append(t.rcpts, r)
		}
	}
	written := 0
	for _, t := range targets {
		in := rec
		in.Direction, in.Recipients = "in", t.rcpts
		if err := d.appendDelivery(ctx, t.u, in); err != nil {
			return written, err
		}
		written++
	}
	if submitter != "" {
		u, err := d.UserByAddress(ctx, submitter)
		if err != nil {
			return written, fmt.Errorf("record delivery: submitter: %w", err)
		}
		out := rec
		out.Direction = "out"
		if err := d.appendDelivery(ctx, u, out); err != nil {
			return written, err
		}
		written++
	}
	return written, nil
}

func (d *Directory) appendDelivery(ctx context.Context, u *User, rec DeliveryRecord) error {
	err := d.appendTimedWith(ctx, func(key string) ([]byte, error) { return d.sealUserSetting(u, key, rec) },
		deliveriesKeyPrefix(u.ID), rec.Time)
	if err != nil {
		return fmt.Errorf("record delivery: %w", err)
	}
	return nil
}

// Deliveries returns the delivery records of the user at address made at
// or after since, oldest first, as the meta leader has them.
func (d *Directory) Deliveries(ctx context.Context, address string, since time.Time) ([]DeliveryRecord, error) {
	if err := d.c.CatchUpMeta(ctx); err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	u, err := d.UserByAddress(ctx, address)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	open := func(key string, sealed []byte, v any) error {
		b, err := d.sealer.Open(u.Keys.Ring(), seal.KindUserValue, u.ID[:], []byte(key), sealed)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, v)
	}
	out, bad, err := readTimedWith[DeliveryRecord](d, open, deliveriesKeyPrefix(u.ID), since)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	if bad > 0 {
		d.log.Warn("delivery records that do not open", "count", bad)
	}
	return out, nil
}

// PruneDeliveries deletes the delivery records made before before, and
// those of users that no longer exist, and returns how many went.
func (d *Directory) PruneDeliveries(ctx context.Context, before time.Time) (int, error) {
	n, err := d.pruneUserTimed(ctx, deliveriesPrefix, before)
	if err != nil {
		return n, fmt.Errorf("prune delivery records: %w", err)
	}
	return n, nil
}
