package directory

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// The last use of an app password (time and client address) is a meta
// setting of its own, "app_password_used/<user id>/<app password id>",
// sealed, not part of the user record: recording it neither invalidates
// the cache of verified credentials nor races with an admin changing the
// user. It is written at most once an hour per app password by each node
// (a node first reads what another one recorded), from a goroutine with
// a bounded queue, so a login never waits for it or fails because of it.
const (
	appPasswordUsedPrefix = "app_password_used/"
	// usageInterval is how old a recorded use must be before a new one is
	// written.
	usageInterval = time.Hour
	// usageQueue bounds the writes waiting; beyond it uses are dropped
	// (and written at a later login).
	usageQueue = 256
	// usageMemory bounds the app passwords whose last write a node
	// remembers.
	usageMemory = 100000
	// usageWriteTimeout bounds one write; usageDrain the writes still
	// queued when the directory closes.
	usageWriteTimeout = 10 * time.Second
	usageDrain        = 3 * time.Second
)

// usageRecord is the sealed value of a last-use setting.
type usageRecord struct {
	Time int64  `json:"t"`
	IP   string `json:"ip,omitempty"`
}

type usageUpdate struct {
	user schema.ID
	app  string
	rec  usageRecord
}

func usageUserPrefix(user schema.ID) string { return appPasswordUsedPrefix + user.String() + "/" }

func usageKey(user schema.ID, app string) string { return usageUserPrefix(user) + app }

// usageTracker throttles and writes the last uses of app passwords.
type usageTracker struct {
	d     *Directory
	queue chan usageUpdate
	stop  chan struct{}
	done  chan struct{}

	mu   sync.Mutex
	last map[string]time.Time // setting key -> the use last written (or queued)
}

func newUsageTracker(d *Directory) *usageTracker {
	t := &usageTracker{
		d: d, queue: make(chan usageUpdate, usageQueue),
		stop: make(chan struct{}), done: make(chan struct{}),
		last: make(map[string]time.Time),
	}
	go t.run()
	return t
}

// used notes a successful login with an app password. It never blocks on
// the store.
func (t *usageTracker) used(user schema.ID, app string, ip netip.Addr) {
	now := t.d.now()
	key := usageKey(user, app)
	t.mu.Lock()
	last, seen := t.last[key]
	t.mu.Unlock()
	if seen && now.Sub(last) < usageInterval {
		return
	}
	if !seen {
		// The first use this node sees: another node may have recorded
		// one within the hour (a local read, no write).
		if r, err := t.d.readUsage(user, app); err == nil && r.Time != 0 {
			if at := time.Unix(r.Time, 0); now.Sub(at) < usageInterval {
				t.note(key, at)
				return
			}
		}
	}
	t.mu.Lock()
	if last, ok := t.last[key]; ok && now.Sub(last) < usageInterval {
		t.mu.Unlock()
		return // a concurrent login queued it
	}
	t.noteLocked(key, now)
	t.mu.Unlock()
	rec := usageRecord{Time: now.Unix()}
	if ip.IsValid() {
		rec.IP = ip.String()
	}
	select {
	case t.queue <- usageUpdate{user: user, app: app, rec: rec}:
	default:
		t.forget(user, app) // full: a later login tries again
	}
}

func (t *usageTracker) note(key string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.noteLocked(key, at)
}

func (t *usageTracker) noteLocked(key string, at time.Time) {
	if _, ok := t.last[key]; !ok && len(t.last) >= usageMemory {
		now := t.d.now()
		for k, v := range t.last {
			if now.Sub(v) >= usageInterval {
				delete(t.last, k)
			}
		}
		if len(t.last) >= usageMemory {
			clear(t.last) // at worst, one more write per app password
		}
	}
	t.last[key] = at
}

// forget drops what this node remembers of an app password's last use.
func (t *usageTracker) forget(user schema.ID, app string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.last, usageKey(user, app))
}

func (t *usageTracker) run() {
	defer close(t.done)
	for {
		select {
		case u := <-t.queue:
			t.write(context.Background(), u)
		case <-t.stop:
			t.drain()
			return
		}
	}
}

// drain writes the queued uses, for usageDrain at most.
func (t *usageTracker) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), usageDrain)
	defer cancel()
	for ctx.Err() == nil {
		select {
		case u := <-t.queue:
			t.write(ctx, u)
		default:
			return
		}
	}
}

// close writes what is queued (for usageDrain at most) and stops.
func (t *usageTracker) close() {
	close(t.stop)
	<-t.done
}

// write stores one last use, unless the app password was revoked
// meanwhile (which would leave a record nobody reads).
func (t *usageTracker) write(ctx context.Context, u usageUpdate) {
	d := t.d
	if !d.appPasswordIDs(u.user)[u.app] {
		return
	}
	key := usageKey(u.user, u.app)
	b, err := json.Marshal(u.rec)
	if err != nil {
		return
	}
	sealed, err := d.sealer.Seal(d.keys.meta, seal.KindSetting, u.user[:], []byte(key), b)
	if err != nil {
		d.log.Warn("record the last use of an app password", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, usageWriteTimeout)
	defer cancel()
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: key, Value: sealed}); err != nil {
		d.log.Warn("record the last use of an app password", "err", err)
		t.forget(u.user, u.app) // a later login tries again
	}
}

// openUsage opens a sealed last-use setting.
func (d *Directory) openUsage(user schema.ID, key string, sealed []byte) (usageRecord, error) {
	var r usageRecord
	b, err := d.sealer.Open(d.keys.meta, seal.KindSetting, user[:], []byte(key), sealed)
	if err != nil {
		return r, fmt.Errorf("open app password use: %w", err)
	}
	return r, json.Unmarshal(b, &r)
}

// readUsage returns the recorded last use of one app password, from this
// node's meta replica.
func (d *Directory) readUsage(user schema.ID, app string) (usageRecord, error) {
	key := usageKey(user, app)
	v, err := d.setting(key)
	if err != nil || v == nil {
		return usageRecord{}, err
	}
	return d.openUsage(user, key, v)
}

// usageOf returns the recorded last uses of a user's app passwords, by
// app password id.
func (d *Directory) usageOf(user schema.ID) map[string]usageRecord {
	prefix := usageUserPrefix(user)
	var settings map[string][]byte
	if err := d.c.ReadMeta(func(r *raftstore.Reader) error { settings = r.Settings(prefix); return nil }); err != nil {
		return nil
	}
	out := make(map[string]usageRecord, len(settings))
	for key, v := range settings {
		r, err := d.openUsage(user, key, v)
		if err != nil {
			d.log.Warn("read the last use of an app password", "err", err)
			continue
		}
		out[strings.TrimPrefix(key, prefix)] = r
	}
	return out
}

// forgetUsage deletes the last-use records of a user's app passwords,
// except those in keep (best effort: a record left behind names nothing
// and holds only a time and an address, sealed).
func (d *Directory) forgetUsage(ctx context.Context, user schema.ID, keep map[string]bool) {
	prefix := usageUserPrefix(user)
	var keys []string
	_ = d.c.ViewMeta(func(r *raftstore.Reader) error {
		for k := range r.Settings(prefix) {
			if !keep[strings.TrimPrefix(k, prefix)] {
				keys = append(keys, k)
			}
		}
		return nil
	})
	for _, k := range keys {
		if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: k}); err != nil {
			d.log.Warn("delete the last use of an app password", "err", err)
			return
		}
	}
}

// userInfoByID opens the record of a user in this node's meta replica.
func (d *Directory) userInfoByID(user schema.ID) (userInfo, error) {
	var rec schema.UserRecord
	var info userInfo
	if err := d.c.ReadMeta(func(r *raftstore.Reader) (err error) { rec, err = r.User(user); return err }); err != nil {
		return info, err
	}
	if err := d.openJSON(d.keys.meta, seal.KindUserInfo, rec.ID, rec.Sealed, &info); err != nil {
		return info, fmt.Errorf("open user record: %w", err)
	}
	return info, nil
}
