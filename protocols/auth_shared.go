package protocols

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// AuthEvent is one change to the login-failure state, as the nodes of a
// cluster share it: a failure counted against a key, a key's failures
// forgotten after a success, or a user's successful login from a client
// address.
type AuthEvent struct {
	Kind   string       `json:"k"` // AuthEventFail, AuthEventReset, AuthEventKnown or AuthEventClear
	Key    string       `json:"key,omitempty"`
	Limit  FailureLimit `json:"limit,omitzero"`
	User   string       `json:"user,omitempty"`
	Client string       `json:"client,omitempty"`
	Time   time.Time    `json:"t"`
}

// The kinds of AuthEvent.
const (
	AuthEventFail  = "fail"
	AuthEventReset = "reset"
	AuthEventKnown = "known"
)

// maxAuthEventField bounds the strings of an event received from another
// node.
const maxAuthEventField = 512

// SharedAuthState is the failure counters and known addresses of an
// AuthGuard, kept in this node's memory, that hold across a cluster:
// every change made here is also handed to publish (which sends it to the
// other nodes), and Apply replays the changes the other nodes publish. A
// password-guessing run spread over several nodes is then counted as one,
// and each node decides from its own copy, without a replicated write per
// failed login. A node that was cut off misses the changes made
// meanwhile.
type SharedAuthState struct {
	failures *memoryFailures
	known    *memoryKnown
	publish  func(AuthEvent)
}

// NewSharedAuthState returns an empty state that hands each local change
// to publish (which must not block).
func NewSharedAuthState(publish func(AuthEvent)) *SharedAuthState {
	return &SharedAuthState{failures: newMemoryFailures(maxFailureEntries), known: newMemoryKnown(maxKnownEntries), publish: publish}
}

// Locked reports whether key is locked out at now.
func (s *SharedAuthState) Locked(key string, now time.Time) bool { return s.failures.Locked(key, now) }

// Fail counts a failure here and on the other nodes.
func (s *SharedAuthState) Fail(key string, limit FailureLimit, now time.Time) bool {
	started := s.failures.Fail(key, limit, now)
	s.publish(AuthEvent{Kind: AuthEventFail, Key: key, Limit: limit, Time: now})
	return started
}

// Reset forgets key's failures here and on the other nodes.
func (s *SharedAuthState) Reset(key string, now time.Time) {
	s.failures.Reset(key, now)
	s.publish(AuthEvent{Kind: AuthEventReset, Key: key, Time: now})
}

// Remember records a successful login here and on the other nodes.
func (s *SharedAuthState) Remember(user, client string, now time.Time) {
	s.known.Remember(user, client, now)
	s.publish(AuthEvent{Kind: AuthEventKnown, User: user, Client: client, Time: now})
}

// Known reports whether user logged in from client at or after since, on
// any node.
func (s *SharedAuthState) Known(user, client string, since time.Time) bool {
	return s.known.Known(user, client, since)
}

// Apply replays a change another node made. Malformed events (unknown
// kind, oversized fields, a time far from this node's clock) are
// dropped; a time from the future is taken as now, so a node with a
// fast clock cannot lock a key out for longer than its lockout.
func (s *SharedAuthState) Apply(e AuthEvent, now time.Time) {
	if len(e.Key) > maxAuthEventField || len(e.User) > maxAuthEventField || len(e.Client) > maxAuthEventField {
		return
	}
	if e.Time.After(now) {
		e.Time = now
	}
	if now.Sub(e.Time) > time.Hour {
		return
	}
	switch e.Kind {
	case AuthEventFail:
		if e.Key == "" || e.Limit.Max <= 0 || e.Limit.Window <= 0 || e.Limit.Lockout <= 0 ||
			e.Limit.Window > 24*time.Hour || e.Limit.Lockout > 24*time.Hour {
			return
		}
		s.failures.Fail(e.Key, e.Limit, e.Time)
	case AuthEventReset:
		if e.Key != "" {
			s.failures.Reset(e.Key, e.Time)
		}
	case AuthEventKnown:
		if e.User != "" && e.Client != "" {
			s.known.Remember(e.User, e.Client, e.Time)
		}
	case AuthEventClear:
		s.failures.clear(e.Key)
	}
}

// AuthEventClear is the kind of an AuthEvent that lifts a lockout (an
// operator's "security unblock").
const AuthEventClear = "clear"

// Lockout is one running lockout, as "mailnode security blocked" lists it.
type Lockout struct {
	// Scope is LockAddress (Value is an IPv4 address or an IPv6 /64) or
	// LockUser (Value is the user's address).
	Scope LockScope `json:"scope"`
	Value string    `json:"value"`
	Until time.Time `json:"until"`
}

// Lockouts lists the lockouts running at now, soonest to end first.
func (s *SharedAuthState) Lockouts(now time.Time) []Lockout {
	var out []Lockout
	for key, until := range s.failures.locked(now) {
		l := Lockout{Until: until}
		switch {
		case strings.HasPrefix(key, "ip:"):
			l.Scope, l.Value = LockAddress, strings.TrimPrefix(key, "ip:")
		case strings.HasPrefix(key, "user:"):
			l.Scope, l.Value = LockUser, strings.TrimPrefix(key, "user:")
		default:
			continue
		}
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Until.Equal(out[j].Until) {
			return out[i].Until.Before(out[j].Until)
		}
		return out[i].Value < out[j].Value
	})
	return out
}

// Unblock lifts the lockout of a client address (an IP address; an IPv6
// one stands for its /64) or a user, here and on the other nodes, and
// forgets its failures. It reports whether a lockout was running here.
func (s *SharedAuthState) Unblock(value string, now time.Time) (bool, error) {
	key, err := lockoutKey(value)
	if err != nil {
		return false, err
	}
	was := s.failures.Locked(key, now)
	s.failures.clear(key)
	s.publish(AuthEvent{Kind: AuthEventClear, Key: key, Time: now})
	return was, nil
}

// lockoutKey maps what an operator types (an IP address, an IPv6 /64 or
// a user's address) to the counter's key.
func lockoutKey(value string) (string, error) {
	if ip, err := netip.ParseAddr(value); err == nil {
		return addressKey(clientKey(ip)), nil
	}
	if p, err := netip.ParsePrefix(value); err == nil && p.Addr().Is6() && p.Bits() == 64 {
		return addressKey(p.Masked().String()), nil
	}
	if user, ok := canonicalUser(value); ok {
		return userKey(user), nil
	}
	return "", fmt.Errorf("%q is no IP address, IPv6 /64 or user address: %w", value, schema.ErrInvalid)
}
