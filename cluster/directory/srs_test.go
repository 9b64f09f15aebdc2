package directory_test

import (
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func newSRS(t testing.TB, secret string) *directory.SRS {
	t.Helper()
	s, err := directory.NewSRS([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSRSRoundTrip(t *testing.T) {
	s := newSRS(t, "0123456789abcdef0123456789abcdef")
	now := time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)
	for _, from := range []string{"alice@example.org", "a=b+c@example.org", "Bob.Smith@Sub.Example.ORG"} {
		fwd, err := s.Forward(from, "fwd.test", now)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(fwd, "SRS0=") || !strings.HasSuffix(fwd, "@fwd.test") || !directory.IsSRS(fwd) {
			t.Fatalf("Forward(%q) = %q, want SRS0=...@fwd.test", from, fwd)
		}
		// A receiver may change the case of the local part.
		for _, addr := range []string{fwd, strings.ToLower(fwd)} {
			got, err := s.Reverse(addr, now.Add(srsDays(20)))
			if err != nil || !strings.EqualFold(got, from) {
				t.Errorf("Reverse(%q) = %q, %v; want %q", addr, got, err, from)
			}
		}
		if _, err := s.Reverse(fwd, now.Add(srsDays(23))); !errors.Is(err, directory.ErrSRSExpired) {
			t.Errorf("Reverse after 23 days: %v, want ErrSRSExpired", err)
		}
	}
	if got, err := s.Forward("", "fwd.test", now); got != "" || err != nil {
		t.Errorf("Forward of the null sender = %q, %v", got, err)
	}
}

func srsDays(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

func TestSRSForgedAndMalformed(t *testing.T) {
	s := newSRS(t, "0123456789abcdef0123456789abcdef")
	other := newSRS(t, "another secret, another cluster!")
	now := time.Now()
	fwd, err := s.Forward("alice@example.org", "fwd.test", now)
	if err != nil {
		t.Fatal(err)
	}
	byOther, _ := other.Forward("alice@example.org", "fwd.test", now)
	tampered := strings.Replace(fwd, "=example.org=", "=evil.example=", 1)
	for _, tc := range []struct {
		addr string
		want error
	}{
		{byOther, directory.ErrSRSForged},
		{tampered, directory.ErrSRSForged},
		{"SRS0=AAAAAA=AA=example.org=alice@fwd.test", directory.ErrSRSForged},
		{"alice@example.org", directory.ErrNotSRS},
		{"SRS0=x@fwd.test", directory.ErrNotSRS},
		{"SRS0=h=t=@fwd.test", directory.ErrNotSRS},
		{"SRS1=h=first=noopaque@fwd.test", directory.ErrNotSRS},
		{"SRS0=" + strings.Repeat("a", 300) + "@fwd.test", directory.ErrNotSRS},
	} {
		if _, err := s.Reverse(tc.addr, now); !errors.Is(err, tc.want) {
			t.Errorf("Reverse(%.60q) = %v, want %v", tc.addr, err, tc.want)
		}
	}
}

func TestSRS1(t *testing.T) {
	first := newSRS(t, "first forwarder's secret 0123456")
	second := newSRS(t, "second forwarder's secret 012345")
	now := time.Now()
	srs0, err := first.Forward("alice@example.org", "first.test", now)
	if err != nil {
		t.Fatal(err)
	}
	srs1, err := second.Forward(srs0, "second.test", now)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(srs1, "SRS1=") || !strings.Contains(srs1, "=first.test==") || !strings.HasSuffix(srs1, "@second.test") {
		t.Fatalf("SRS1 form %q", srs1)
	}
	// A third forwarder keeps the first forwarder and the opaque part.
	third := newSRS(t, "third forwarder's secret 0123456")
	srs1b, err := third.Forward(srs1, "third.test", now)
	if err != nil || !strings.Contains(srs1b, "=first.test==") || !strings.HasSuffix(srs1b, "@third.test") {
		t.Fatalf("SRS1 of SRS1 = %q, %v", srs1b, err)
	}
	back, err := third.Reverse(srs1b, now)
	if err != nil || !strings.EqualFold(back, srs0) {
		t.Fatalf("third reverses to %q, %v; want %q", back, err, srs0)
	}
	back, err = second.Reverse(srs1, now)
	if err != nil || !strings.EqualFold(back, srs0) {
		t.Fatalf("second reverses to %q, %v; want %q", back, err, srs0)
	}
	orig, err := first.Reverse(back, now)
	if err != nil || orig != "alice@example.org" {
		t.Fatalf("first reverses to %q, %v", orig, err)
	}
	if _, err := first.Reverse(srs1, now); !errors.Is(err, directory.ErrSRSForged) {
		t.Errorf("an SRS1 address of another forwarder: %v, want ErrSRSForged", err)
	}
}

func FuzzSRSReverse(f *testing.F) {
	s := newSRS(f, "0123456789abcdef0123456789abcdef")
	now := time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)
	good, _ := s.Forward("alice@example.org", "fwd.test", now)
	srs1, _ := s.Forward(good, "fwd2.test", now)
	for _, seed := range []string{good, srs1, "SRS0=a=b=c=d@e", "SRS1=a=b==c@d", "srs0+x@y", "", "@", "SRS0====@"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		orig, err := s.Reverse(addr, now)
		if err != nil {
			return
		}
		// Whatever reverses was made with this secret: forwarding the
		// result again must reverse to it too.
		if orig == "" {
			t.Fatalf("Reverse(%q) gave an empty address", addr)
		}
		if _, err := s.Forward(orig, "fwd.test", now); err != nil && !errors.Is(err, directory.ErrNotSRS) {
			t.Fatalf("Forward(%q): %v", orig, err)
		}
	})
}

// TestForwardTargets: an alias may name external addresses; they are
// found through aliases and plus-addresses, every node shares one SRS
// secret, and a domain's queue owner has the domain's id.
func TestForwardTargets(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 2, MailShards: 1, Replicas: 2})
	ada := "ada@example.test"
	c.AddUser(ada, aliasTestPassword)
	ctx := testCtx(t)
	a, b := c.Nodes[0].Directory(), c.Nodes[1].Directory()
	if _, err := a.AddAlias(ctx, "fwd@example.test", []string{ada, "Someone@Gmail.test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddAlias(ctx, "team@example.test", []string{"fwd@example.test", "other@elsewhere.test"}); err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string][]string{
		"fwd@example.test":     {"someone@gmail.test"},
		"fwd+tag@example.test": {"someone@gmail.test"},
		"team@example.test":    {"someone@gmail.test", "other@elsewhere.test"},
		"Team+x@Example.test":  {"someone@gmail.test", "other@elsewhere.test"},
		"ada@example.test":     nil,
		"nobody@example.test":  nil,
		"someone@gmail.test":   nil,
	} {
		// As the MX port does: the local lookup first (it catches up
		// with the meta leader on a miss).
		_ = b.LookupRecipient(ctx, addr)
		got, err := b.ForwardTargets(ctx, addr)
		if want == nil {
			if !errors.Is(err, schema.ErrNoSuchUser) && !errors.Is(err, schema.ErrNotLocal) {
				t.Errorf("ForwardTargets(%s) = %v, %v; want none", addr, got, err)
			}
			continue
		}
		sort.Strings(got)
		sort.Strings(want)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ForwardTargets(%s) = %v, %v; want %v", addr, got, err, want)
		}
	}
	// The local target still receives mail to the alias.
	if u, err := b.ResolveRecipient(ctx, "fwd@example.test"); err != nil || u.Address != ada {
		t.Errorf("ResolveRecipient(fwd) = %v, %v", u, err)
	}
	// An alias with only external targets has no local mailbox.
	if _, err := a.AddAlias(ctx, "out@example.test", []string{"x@gmail.test"}); err != nil {
		t.Fatal(err)
	}
	if err := b.LookupRecipient(ctx, "out@example.test"); !errors.Is(err, schema.ErrNoSuchUser) {
		t.Errorf("LookupRecipient(out) = %v, want ErrNoSuchUser", err)
	}

	sa, err := a.SRS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.SRS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	fwd, err := sa.Forward("alice@example.org", "example.test", now)
	if err != nil {
		t.Fatal(err)
	}
	if orig, err := sb.Reverse(fwd, now); err != nil || orig != "alice@example.org" {
		t.Errorf("the other node reverses %q to %q, %v", fwd, orig, err)
	}

	o, err := a.DomainQueueOwner(ctx, "Example.test")
	if err != nil || o.Address != "postmaster@example.test" {
		t.Fatalf("DomainQueueOwner = %+v, %v", o, err)
	}
	if o2, err := b.DomainQueueOwnerByID(o.ID); err != nil || o2.ID != o.ID || o2.Address != o.Address {
		t.Errorf("DomainQueueOwnerByID = %+v, %v", o2, err)
	}
	if _, err := a.DomainQueueOwner(ctx, "gmail.test"); !errors.Is(err, schema.ErrNoSuchDomain) {
		t.Errorf("DomainQueueOwner(gmail.test) = %v, want ErrNoSuchDomain", err)
	}
}
