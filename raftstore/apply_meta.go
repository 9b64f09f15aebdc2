package raftstore

import (
	"bytes"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func (a *applier) putDomain(p *schema.PutDomain) *schema.Result {
	d := &p.Record
	if d.ID.IsZero() {
		return fail(schema.CodeInvalid)
	}
	domains, names := a.tx.Bucket(bucketDomains), a.tx.Bucket(bucketDomainNames)
	if names.Get(d.NameKey[:]) != nil || domains.Get(d.ID[:]) != nil {
		return fail(schema.CodeDomainExists)
	}
	must(domains.Put(d.ID[:], d.Marshal()))
	must(names.Put(d.NameKey[:], d.ID[:]))
	return ok()
}

func (a *applier) deleteDomain(p *schema.DeleteDomain) *schema.Result {
	domains, names := a.tx.Bucket(bucketDomains), a.tx.Bucket(bucketDomainNames)
	v := domains.Get(p.Domain[:])
	if v == nil {
		return fail(schema.CodeNoSuchDomain)
	}
	var d schema.DomainRecord
	if d.Unmarshal(v) != nil {
		return fail(schema.CodeInvalid)
	}
	// A domain with users cannot go: their keys are wrapped by its key.
	c := a.tx.Bucket(bucketUsers).Cursor()
	for k, uv := c.First(); k != nil; k, uv = c.Next() {
		var u schema.UserRecord
		if u.Unmarshal(uv) == nil && u.Domain == p.Domain {
			return fail(schema.CodeCannotDelete)
		}
	}
	must(names.Delete(d.NameKey[:]))
	must(domains.Delete(p.Domain[:]))
	return ok()
}

func (a *applier) putUser(p *schema.PutUser) *schema.Result {
	u := &p.Record
	if u.ID.IsZero() {
		return fail(schema.CodeInvalid)
	}
	users, names := a.tx.Bucket(bucketUsers), a.tx.Bucket(bucketUserNames)
	if a.tx.Bucket(bucketDomains).Get(u.Domain[:]) == nil {
		return fail(schema.CodeNoSuchDomain)
	}
	existing := users.Get(u.ID[:])
	if p.Create {
		if existing != nil || names.Get(u.NameKey[:]) != nil {
			return fail(schema.CodeUserExists)
		}
	} else {
		if existing == nil {
			return fail(schema.CodeNoSuchUser)
		}
		var old schema.UserRecord
		if old.Unmarshal(existing) != nil || old.NameKey != u.NameKey || old.Domain != u.Domain {
			// An update may change credentials and keys, not identity.
			return fail(schema.CodeInvalid)
		}
	}
	must(users.Put(u.ID[:], u.Marshal()))
	must(names.Put(u.NameKey[:], u.ID[:]))
	return ok()
}

func (a *applier) deleteUser(p *schema.DeleteUser) *schema.Result {
	users, names := a.tx.Bucket(bucketUsers), a.tx.Bucket(bucketUserNames)
	v := users.Get(p.User[:])
	if v == nil {
		return fail(schema.CodeNoSuchUser)
	}
	var u schema.UserRecord
	if u.Unmarshal(v) != nil {
		return fail(schema.CodeInvalid)
	}
	if id := names.Get(u.NameKey[:]); id != nil && bytes.Equal(id, p.User[:]) {
		must(names.Delete(u.NameKey[:]))
	}
	// The record holds the wrapped user key: deleting it is what makes the
	// user's mail unreadable (crypto-shredding).
	must(users.Delete(p.User[:]))
	return ok()
}
