package directory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// A time log is a run of sealed meta settings under one prefix, one per
// entry, keyed "<prefix><unix ns, 20 digits>-<random>": replicated with
// the meta shard, in time order by key, and pruned by the time in the key
// (the audit log and the users' login histories are two).

// appendTimed adds an entry made at t, sealed to owner, under prefix.
func (d *Directory) appendTimed(ctx context.Context, owner schema.ID, prefix string, t time.Time, v any) error {
	return d.appendTimedWith(ctx, func(key string) ([]byte, error) { return d.sealSetting(owner, key, v) }, prefix, t)
}

// appendTimedWith adds an entry made at t under prefix, sealed by seal
// (which gets the entry's key, to bind it).
func (d *Directory) appendTimedWith(ctx context.Context, seal func(key string) ([]byte, error), prefix string, t time.Time) error {
	key, err := timedKey(prefix, t)
	if err != nil {
		return err
	}
	sealed, err := seal(key)
	if err != nil {
		return err
	}
	_, err = d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: key, Value: sealed})
	return err
}

// timedKey returns a new entry's key under prefix for time t.
func timedKey(prefix string, t time.Time) (string, error) {
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s%020d-%s", prefix, t.UnixNano(), hex.EncodeToString(r[:])), nil
}

// readTimed returns the entries under prefix made at or after since,
// oldest first, as this node's meta replica has them, and how many did
// not open (logged by the caller).
func readTimed[T any](d *Directory, owner schema.ID, prefix string, since time.Time) ([]T, int, error) {
	return readTimedWith[T](d, func(key string, sealed []byte, v any) error { return d.openSetting(owner, key, sealed, v) }, prefix, since)
}

// readTimedWith is readTimed with the entries opened by open.
func readTimedWith[T any](d *Directory, open func(key string, sealed []byte, v any) error, prefix string, since time.Time) ([]T, int, error) {
	from := prefix + fmt.Sprintf("%020d", max(since.UnixNano(), 0))
	var out []T
	var bad int
	err := d.c.ViewMeta(func(r *raftstore.Reader) error {
		entries := r.Settings(prefix)
		keys := make([]string, 0, len(entries))
		for k := range entries {
			if k >= from {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			var e T
			if err := open(k, entries[k], &e); err != nil {
				bad++
				continue
			}
			out = append(out, e)
		}
		return nil
	})
	return out, bad, err
}

// timedKeyTime returns the time (unix ns) in a time-log key whose prefix
// is already cut off.
func timedKeyTime(rest string) (int64, bool) {
	stamp, _, _ := strings.Cut(rest, "-")
	ns, err := strconv.ParseInt(stamp, 10, 64)
	return ns, err == nil
}

// pruneUserTimed deletes the entries of per-user time logs under prefix
// ("<prefix><user id>/<time>-<random>") made before before or whose user
// is gone.
func (d *Directory) pruneUserTimed(ctx context.Context, prefix string, before time.Time) (int, error) {
	var old []string
	err := d.c.ViewMeta(func(r *raftstore.Reader) error {
		gone := map[string]bool{}
		for k := range r.Settings(prefix) {
			user, rest, _ := strings.Cut(strings.TrimPrefix(k, prefix), "/")
			if ns, ok := timedKeyTime(rest); ok && ns < before.UnixNano() {
				old = append(old, k)
				continue
			}
			deleted, seen := gone[user]
			if !seen {
				deleted = userGone(r, user)
				gone[user] = deleted
			}
			if deleted {
				old = append(old, k)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for i, k := range old {
		if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: k}); err != nil {
			return i, err
		}
	}
	return len(old), nil
}

// userGone reports whether the user of a login record's key no longer
// exists (a deleted user's history goes with the next prune).
func userGone(r *raftstore.Reader, hexID string) bool {
	b, err := hex.DecodeString(hexID)
	if err != nil || len(b) != len(schema.ID{}) {
		return true
	}
	_, err = r.User(schema.ID(b))
	return errors.Is(err, schema.ErrNoSuchUser)
}
