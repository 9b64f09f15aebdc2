package raftstore

import (
	"bytes"
	"encoding/binary"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// ubValues is the sub-bucket of a user's bucket holding the user's small
// values (scope id | name -> value). It is created by the first value, so
// users made before it existed need no migration.
var ubValues = []byte("values")

func userValueKey(scope schema.ID, name string) []byte {
	return append(scope[:len(scope):len(scope)], name...)
}

// swapUserValue sets a user value if it still has the expected value.
func (a *applier) swapUserValue(p *schema.SwapUserValue) *schema.Result {
	if p.Name == "" || len(p.Name) > schema.MaxUserValueName || len(p.New) > schema.MaxUserValue {
		return fail(schema.CodeInvalid)
	}
	u := a.user(p.User)
	if u == nil {
		return fail(schema.CodeNoSuchUser)
	}
	if !p.Scope.IsZero() && u.mailbox(p.Scope) == nil {
		return fail(schema.CodeNoSuchMailbox)
	}
	key := userValueKey(p.Scope, p.Name)
	var cur []byte
	if b := u.b.Bucket(ubValues); b != nil {
		cur = b.Get(key)
	}
	if p.OldAbsent != (cur == nil) || (cur != nil && !bytes.Equal(cur, p.Old)) {
		return fail(schema.CodeConflict)
	}
	if p.New == nil {
		if cur != nil {
			must(u.b.Bucket(ubValues).Delete(key))
		}
		return ok()
	}
	b, err := u.b.CreateBucketIfNotExists(ubValues)
	must(err)
	must(b.Put(key, p.New))
	return ok()
}

// claimRecent raises a mailbox's \Recent claim (schema.RecentValue) to
// upTo, as ClaimRecent sessions move it with SwapUserValue, and returns
// the claim before.
func (u *userMail) claimRecent(mbox schema.ID, upTo schema.UID) schema.UID {
	key := userValueKey(mbox, schema.RecentValue)
	var cur schema.UID
	if b := u.b.Bucket(ubValues); b != nil {
		if v := b.Get(key); len(v) == 4 {
			cur = schema.UID(binary.BigEndian.Uint32(v))
		}
	}
	if upTo > cur {
		b, err := u.b.CreateBucketIfNotExists(ubValues)
		must(err)
		must(b.Put(key, binary.BigEndian.AppendUint32(nil, uint32(upTo))))
	}
	return cur
}

// deleteUserValues removes the values scoped to a mailbox.
func (u *userMail) deleteUserValues(scope schema.ID) {
	b := u.b.Bucket(ubValues)
	if b == nil {
		return
	}
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(scope[:]); k != nil && bytes.HasPrefix(k, scope[:]); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		must(b.Delete(k))
	}
}

// UserValue returns one of a user's values (SwapUserValue), or nil when
// it is not set.
func (r *Reader) UserValue(user, scope schema.ID, name string) ([]byte, error) {
	u, err := r.userMail(user)
	if err != nil {
		return nil, err
	}
	b := u.b.Bucket(ubValues)
	if b == nil {
		return nil, nil
	}
	return bytes.Clone(b.Get(userValueKey(scope, name))), nil
}
