package imap

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/emersion/go-imap/v2"
)

// Routes in ENVELOPE addresses. An address written with an obs-route
// ("<@relay:user@host>", RFC 5322 section 4.4) has its route answered as
// the address's at-domain-list (RFC 3501 section 7.4.2: (NIL "@relay"
// "user" "host")); the library has no field for it and writes NIL. So
// the session gives the library such an address with a placeholder
// mailbox, a token unique to the connection, and the relay replaces the
// library's `NIL "token"` with the route and the real mailbox. The
// tokens live until the command's tagged answer.

// maxRouteTokens bounds the tokens of one command; the routes of the
// addresses beyond it are left NIL, which RFC 9051 allows.
const maxRouteTokens = 4096

// maxRoutedPiece bounds how much of a response line the relay gathers
// into one piece while tokens wait, so that no token is split between
// two pieces (an ENVELOPE holds at most 6 x maxEnvelopeAddresses
// addresses).
const maxRoutedPiece = 4 << 20

// routeTokens are a connection's placeholders for routed addresses.
type routeTokens struct {
	// pending counts the tokens given out and not yet cleared, so that
	// the relay looks at nothing while there are none.
	pending atomic.Int32

	mu sync.Mutex
	// needle is what the library writes before a token's number:
	// `NIL "adl-<random>-`.
	needle []byte
	next   uint64
	// byNumber: a token's number to what replaces `NIL "token"`:
	// `"@relay" "user"`.
	byNumber map[uint64]string
}

// tokenise returns env with each routed address's mailbox replaced by a
// token whose replacement the relay writes. env is not modified; the
// lists that change are copied. Routes or mailboxes a quoted string
// cannot hold as they are, and routes beyond maxRouteTokens, are left
// out (answered NIL).
func (t *routeTokens) tokenise(env *imap.Envelope, routes []envelopeRoute) *imap.Envelope {
	if len(routes) == 0 {
		return env
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.needle == nil {
		var nonce [8]byte
		if _, err := rand.Read(nonce[:]); err != nil {
			return env
		}
		t.needle = []byte(`NIL "adl-` + hex.EncodeToString(nonce[:]) + "-")
		t.byNumber = make(map[uint64]string)
	}
	out := *env
	copied := map[int]bool{}
	for _, r := range routes {
		list := envelopeFields[r.field].list(&out)
		if r.index >= len(*list) || len(t.byNumber) >= maxRouteTokens {
			continue
		}
		a := (*list)[r.index]
		if !plainQuotable(r.adl) || !plainQuotable(a.Mailbox) {
			continue
		}
		if !copied[r.field] {
			*list = append([]imap.Address(nil), *list...)
			copied[r.field] = true
		}
		t.next++
		t.byNumber[t.next] = string(quoted([]byte(r.adl))) + " " + string(quoted([]byte(a.Mailbox)))
		t.pending.Add(1)
		(*list)[r.index].Mailbox = string(t.needle[len(`NIL "`):]) + strconv.FormatUint(t.next, 10)
	}
	return &out
}

// plainQuotable reports whether s is non-empty printable ASCII, which
// the library and quoted write as the same quoted string.
func plainQuotable(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// replace writes the routes into a piece of the library's output.
func (t *routeTokens) replace(frag []byte) []byte {
	if t.pending.Load() == 0 {
		return frag
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !bytes.Contains(frag, t.needle) {
		return frag
	}
	var out []byte
	rest := frag
	for {
		i := bytes.Index(rest, t.needle)
		if i < 0 {
			break
		}
		num := rest[i+len(t.needle):]
		end := bytes.IndexByte(num, '"')
		if end < 0 {
			break
		}
		n, err := strconv.ParseUint(string(num[:end]), 10, 64)
		repl, ok := t.byNumber[n]
		if err != nil || !ok {
			out = append(out, rest[:i+len(t.needle)]...)
			rest = rest[i+len(t.needle):]
			continue
		}
		out = append(out, rest[:i]...)
		out = append(out, repl...)
		rest = num[end+1:]
	}
	if out == nil {
		return frag
	}
	return append(out, rest...)
}

// clear drops the tokens, at the running command's tagged answer.
func (t *routeTokens) clear() {
	if t.pending.Load() == 0 {
		return
	}
	t.mu.Lock()
	clear(t.byNumber)
	t.pending.Store(0)
	t.mu.Unlock()
}

// readWhole reads the rest of a piece that filled the relay's buffer,
// up to the end of its line or maxRoutedPiece, so that a token is not
// split between two pieces. It returns what ReadSlice would have for the
// whole piece.
func readWhole(br *bufio.Reader, frag []byte) ([]byte, error) {
	buf := bytes.Clone(frag)
	for len(buf) < maxRoutedPiece {
		more, err := br.ReadSlice('\n')
		buf = append(buf, more...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return buf, err
		}
	}
	return buf, bufio.ErrBufferFull
}
