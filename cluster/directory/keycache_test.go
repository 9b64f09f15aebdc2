package directory

import (
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

func TestKeyCacheIsTiedToTheWrappedKey(t *testing.T) {
	c := newKeyCache()
	u := schema.UserRecord{ID: schema.NewID(), Domain: schema.NewID(), WrappedKey: []byte("wrapped-1")}
	k := newUserKeys(u.ID, []seal.Key{seal.NewKey(1)})
	if c.get(u) != nil {
		t.Fatal("hit in an empty cache")
	}
	c.put(u, k)
	if c.get(u) != k {
		t.Fatal("miss after put")
	}
	rewrapped := u
	rewrapped.WrappedKey = []byte("wrapped-2")
	if c.get(rewrapped) != nil {
		t.Fatal("a key unwrapped from another wrapped key was served")
	}
	c.forget(u.ID)
	if c.get(u) != nil {
		t.Fatal("hit after forget")
	}
}
