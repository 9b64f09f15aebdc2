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

// Bounds of one meta-shard command of delivery records: a batch
// larger than either is written as several commands.
const (
	maxDeliveryBatch      = 256
	maxDeliveryBatchBytes = 1 << 20
)

// Delivery is one SMTP message transaction to record: its record and
// the submitting user's address ("" on the MX port).
type Delivery struct {
	Record    DeliveryRecord
	Submitter string
}

// RecordDelivery appends rec to the records of every user a recipient
// resolves to (Direction "in", with the recipients that led to that
// user) and, when submitter is a user's address, to the submitter's
// (Direction "out", every recipient). Recipients that are no local user
// are only named in the submitter's record. It returns how many records
// it wrote.
func (d *Directory) RecordDelivery(ctx context.Context, rec DeliveryRecord, submitter string) (int, error) {
	settings, err := d.deliverySettings(ctx, rec, submitter)
	if len(settings) > 0 {
		if werr := d.putSettings(ctx, settings); werr != nil {
			return 0, fmt.Errorf("record delivery: %w", werr)
		}
	}
	return len(settings), err
}

// RecordDeliveries records each of ds as RecordDelivery does, with the
// records of all of them written in as few meta-shard commands as the
// bounds allow (maxDeliveryBatch records or maxDeliveryBatchBytes per
// command): the meta shard commits once per batch instead of once per
// message. It returns, per delivery, nil when all its records are
// written.
func (d *Directory) RecordDeliveries(ctx context.Context, ds []Delivery) []error {
	errs := make([]error, len(ds))
	var (
		batch  []schema.PutSetting
		owners []int // the delivery of each setting of batch
		size   int
	)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if err := d.putSettings(ctx, batch); err != nil {
			for _, i := range owners {
				if errs[i] == nil {
					errs[i] = fmt.Errorf("record delivery: %w", err)
				}
			}
		}
		batch, owners, size = batch[:0], owners[:0], 0
	}
	for i := range ds {
		settings, err := d.deliverySettings(ctx, ds[i].Record, ds[i].Submitter)
		errs[i] = err
		for _, s := range settings {
			n := len(s.Key) + len(s.Value)
			if len(batch) == maxDeliveryBatch || (len(batch) > 0 && size+n > maxDeliveryBatchBytes) {
				flush()
			}
			batch, owners, size = append(batch, s), append(owners, i), size+n
		}
	}
	flush()
	return errs
}

// putSettings writes settings to the meta shard in one command. A meta
// leader running a binary from before PutSettings refuses it as
// invalid; the settings are then written one by one, as before.
func (d *Directory) putSettings(ctx context.Context, settings []schema.PutSetting) error {
	if len(settings) > 1 {
		_, err := d.c.Apply(ctx, MetaShard, &schema.PutSettings{Settings: settings})
		if !errors.Is(err, schema.ErrInvalid) {
			return err
		}
	}
	for i := range settings {
		if _, err := d.c.Apply(ctx, MetaShard, &settings[i]); err != nil {
			return err
		}
	}
	return nil
}

// deliverySettings resolves rec's recipients and returns the sealed
// records to write, one per user: those it could build even when it
// fails (a submitter that is not found leaves the recipients' records).
func (d *Directory) deliverySettings(ctx context.Context, rec DeliveryRecord, submitter string) ([]schema.PutSetting, error) {
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
			return nil, fmt.Errorf("record delivery: %w", err)
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
	var out []schema.PutSetting
	for _, t := range targets {
		in := rec
		in.Direction, in.Recipients = "in", t.rcpts
		s, err := d.deliverySetting(t.u, in)
		if err != nil {
			return out, err
		}
		out = append(out, s)
	}
	if submitter != "" {
		u, err := d.UserByAddress(ctx, submitter)
		if err != nil {
			return out, fmt.Errorf("record delivery: submitter: %w", err)
		}
		outRec := rec
		outRec.Direction = "out"
		s, err := d.deliverySetting(u, outRec)
		if err != nil {
			return out, err
		}
		out = append(out, s)
	}
	return out, nil
}

// deliverySetting seals rec as an entry of u's delivery records.
func (d *Directory) deliverySetting(u *User, rec DeliveryRecord) (schema.PutSetting, error) {
	key, err := timedKey(deliveriesKeyPrefix(u.ID), rec.Time)
	if err != nil {
		return schema.PutSetting{}, fmt.Errorf("record delivery: %w", err)
	}
	sealed, err := d.sealUserSetting(u, key, rec)
	if err != nil {
		return schema.PutSetting{}, fmt.Errorf("record delivery: %w", err)
	}
	return schema.PutSetting{Key: key, Value: sealed}, nil
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
