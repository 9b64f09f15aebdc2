package protocoltest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Env is a mail store for a test: an in-memory MemStore, seen by the
// frontends through the same protocols.StoreOf adapter as the production
// store.
type Env struct {
	// Store is what the frontends are given.
	Store protocols.Store
	// Mem is the store itself, for what the frontends cannot do (adding
	// users, injecting failures).
	Mem *MemStore
}

// NewStore returns an empty store; t.Cleanup checks its consistency when
// the test ends.
func NewStore(t testing.TB) *Env {
	t.Helper()
	m := NewMemStore()
	t.Cleanup(func() {
		if err := m.CheckConsistency(); err != nil {
			t.Errorf("store inconsistent at the end of the test: %v", err)
		}
	})
	return &Env{Store: protocols.StoreOf[*MemAccount](m), Mem: m}
}

// AddUser creates a user, and its domain if needed. Passwords must have
// at least 8 characters.
func (e *Env) AddUser(t testing.TB, address, password string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	domain := address[strings.LastIndexByte(address, '@')+1:]
	if err := e.Mem.AddDomain(ctx, domain); err != nil && !errors.Is(err, schema.ErrDomainExists) {
		t.Fatalf("add domain %s: %v", domain, err)
	}
	if err := e.Mem.AddUser(ctx, address, password); err != nil {
		t.Fatalf("add user %s: %v", address, err)
	}
}

// Login authenticates and returns the account; t.Cleanup closes it.
func (e *Env) Login(t testing.TB, address, password string) protocols.Account {
	t.Helper()
	acct, err := e.Store.Authenticate(context.Background(), schema.Credentials{Username: address, Password: password})
	if err != nil {
		t.Fatalf("login %s: %v", address, err)
	}
	t.Cleanup(func() { acct.Close() })
	return acct
}

// SetUnavailable makes every later write to the store fail with
// schema.ErrUnavailable, or lets writes succeed again.
func (e *Env) SetUnavailable(unavailable bool) { e.Mem.SetUnavailable(unavailable) }
