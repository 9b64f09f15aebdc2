package protocols

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// ticketInfo labels the key SessionTickets derives from the cluster's
// master key, apart from every other key derived from it.
const ticketInfo = "mailcluster/tls-session-ticket/v1"

// ticketVersion is the first byte of a ticket SessionTickets wraps, so a
// later format can tell its tickets from these.
const ticketVersion = 1

// SessionTickets wraps the TLS 1.3 session tickets of the frontends under
// a key that every node of the cluster derives from the cluster's master
// key, so a mail client resumes its session on whichever node it reaches
// next (round-robin DNS, a load balancer) and after a node restarts;
// with Go's default, each process has keys of its own, and every such
// connection costs a full handshake (a signature on the server, a chain
// verification on the client).
//
// Only TLS 1.3 tickets are shared. A TLS 1.3 resumption here always runs
// a fresh key exchange (Go's server accepts only psk_dhe_ke), so whoever
// could open a ticket learns neither the resumed connection's keys nor
// the first one's; a TLS 1.2 ticket holds the session's master secret, so
// TLS 1.2 keeps Go's per-process keys, rotated daily and never written
// down. The sealed state carries its creation time, and Go refuses one
// older than seven days whatever key opens it.
type SessionTickets struct {
	aead cipher.AEAD
}

// NewSessionTickets derives the ticket key from the cluster's master key.
func NewSessionTickets(masterKey []byte) (*SessionTickets, error) {
	key, err := hkdf.Key(sha256.New, masterKey, nil, ticketInfo, chacha20poly1305.KeySize)
	if err != nil {
		return nil, fmt.Errorf("session ticket key: %w", err)
	}
	aead, err := chacha20poly1305.NewX(key)
	clear(key)
	if err != nil {
		return nil, fmt.Errorf("session ticket key: %w", err)
	}
	return &SessionTickets{aead: aead}, nil
}

// Install makes cfg wrap and unwrap its TLS 1.3 session tickets with the
// shared key, and TLS 1.2 tickets as Go does by default (cfg's own
// keys). Configs cloned from cfg afterwards do the same.
func (st *SessionTickets) Install(cfg *tls.Config) {
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		if cs.Version != tls.VersionTLS13 {
			return cfg.EncryptTicket(cs, ss)
		}
		return st.wrap(ss)
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		if cs.Version != tls.VersionTLS13 {
			return cfg.DecryptTicket(identity, cs)
		}
		// A ticket that does not open (another cluster's, a node's own
		// from before, damaged) means a full handshake, not a failed one.
		return st.unwrap(identity), nil
	}
}

// wrap seals a session's state: the version byte, a random nonce, then
// the state encrypted and authenticated with the version byte.
func (st *SessionTickets) wrap(ss *tls.SessionState) ([]byte, error) {
	state, err := ss.Bytes()
	if err != nil {
		return nil, fmt.Errorf("session ticket: %w", err)
	}
	ns := st.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(state)+st.aead.Overhead())
	out[0] = ticketVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("session ticket: %w", err)
	}
	return st.aead.Seal(out, out[1:1+ns], state, out[:1]), nil
}

// unwrap opens a ticket from wrap, or returns nil.
func (st *SessionTickets) unwrap(identity []byte) *tls.SessionState {
	ns := st.aead.NonceSize()
	if len(identity) < 1+ns+st.aead.Overhead() || identity[0] != ticketVersion {
		return nil
	}
	state, err := st.aead.Open(nil, identity[1:1+ns], identity[1+ns:], identity[:1])
	if err != nil {
		return nil
	}
	ss, err := tls.ParseSessionState(state)
	if err != nil {
		return nil
	}
	return ss
}
