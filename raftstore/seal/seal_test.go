package seal

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func newSealer(t *testing.T) *Sealer {
	t.Helper()
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestRoundTrip(t *testing.T) {
	s := newSealer(t)
	kr := NewStatic(NewKey(1))
	for _, plain := range [][]byte{
		nil,
		[]byte("short"),
		[]byte(strings.Repeat("compressible mail body line\r\n", 1000)),
		bytes.Repeat([]byte{0xff, 0x00, 0x13}, 40000),
	} {
		sealed, err := s.Seal(kr, KindChunk, []byte("user"), []byte("obj"), plain)
		if err != nil {
			t.Fatal(err)
		}
		if len(plain) > 16 && bytes.Contains(sealed, plain[:16]) {
			t.Fatalf("sealed value contains plaintext")
		}
		got, err := s.Open(kr, KindChunk, []byte("user"), []byte("obj"), sealed)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("round trip mismatch: %d vs %d bytes", len(got), len(plain))
		}
	}
}

func TestCompressesLargeText(t *testing.T) {
	s := newSealer(t)
	kr := NewStatic(NewKey(1))
	plain := []byte(strings.Repeat("Lorem ipsum dolor sit amet. ", 2000))
	sealed, err := s.Seal(kr, KindChunk, nil, nil, plain)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) > len(plain)/4 {
		t.Fatalf("sealed %d bytes of very compressible %d bytes", len(sealed), len(plain))
	}
}

func TestTamperSwapWrongKey(t *testing.T) {
	s := newSealer(t)
	kr := NewStatic(NewKey(7))
	plain := []byte(strings.Repeat("secret subject ", 50))
	sealed, err := s.Seal(kr, KindMessageAttrs, []byte("alice"), []byte("msg-1"), plain)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		kr     Keyring
		kind   Kind
		owner  string
		object string
		value  func() []byte
		want   error
	}{
		{"flipped ciphertext byte", kr, KindMessageAttrs, "alice", "msg-1", func() []byte {
			b := bytes.Clone(sealed)
			b[len(b)-20] ^= 1
			return b
		}, ErrAuth},
		{"flipped flags byte", kr, KindMessageAttrs, "alice", "msg-1", func() []byte {
			b := bytes.Clone(sealed)
			b[1] ^= flagZstd
			return b
		}, ErrAuth},
		{"flipped nonce", kr, KindMessageAttrs, "alice", "msg-1", func() []byte {
			b := bytes.Clone(sealed)
			b[10] ^= 0x80
			return b
		}, ErrAuth},
		{"swapped to other object", kr, KindMessageAttrs, "alice", "msg-2", func() []byte { return sealed }, ErrAuth},
		{"swapped to other owner", kr, KindMessageAttrs, "bob", "msg-1", func() []byte { return sealed }, ErrAuth},
		{"swapped to other kind", kr, KindMailbox, "alice", "msg-1", func() []byte { return sealed }, ErrAuth},
		{"wrong key with same id", NewStatic(NewKey(7)), KindMessageAttrs, "alice", "msg-1", func() []byte { return sealed }, ErrAuth},
		{"unknown key id", NewStatic(NewKey(8)), KindMessageAttrs, "alice", "msg-1", func() []byte { return sealed }, ErrNoKey},
		{"truncated", kr, KindMessageAttrs, "alice", "msg-1", func() []byte { return sealed[:20] }, ErrMalformed},
		{"bad version", kr, KindMessageAttrs, "alice", "msg-1", func() []byte {
			b := bytes.Clone(sealed)
			b[0] = 9
			return b
		}, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Open(tc.kr, tc.kind, []byte(tc.owner), []byte(tc.object), tc.value())
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	s := newSealer(t)
	old := NewKey(1)
	sealed, err := s.Seal(NewStatic(old), KindChunk, nil, nil, []byte("kept across rotation"))
	if err != nil {
		t.Fatal(err)
	}
	rotated := NewStatic(old, NewKey(2))
	fresh, err := s.Seal(rotated, KindChunk, nil, nil, []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := KeyID(fresh); id != 2 {
		t.Fatalf("new value sealed with key %d, want 2", id)
	}
	if got, err := s.Open(rotated, KindChunk, nil, nil, sealed); err != nil || string(got) != "kept across rotation" {
		t.Fatalf("old value after rotation: %q, %v", got, err)
	}
}

func TestDeriveAndIndex(t *testing.T) {
	var master [KeySize]byte
	a, b := Derive(master, "meta"), Derive(master, "index")
	if a == b {
		t.Fatal("different purposes derived the same key")
	}
	if Index(a, "alice@example.test") == Index(b, "alice@example.test") {
		t.Fatal("index does not depend on the key")
	}
	if Index(a, "alice") != Index(a, "alice") {
		t.Fatal("index is not deterministic")
	}
}

// TestIndexerMatchesIndex checks that the reused HMAC states of an
// Indexer give Index's hashes, from many goroutines at once (a state
// not reset between names would chain them).
func TestIndexerMatchesIndex(t *testing.T) {
	var master [KeySize]byte
	key := Derive(master, "index")
	x := NewIndexer(key)
	names := []string{"", "user:alice@example.test", "domain:example.test", strings.Repeat("long name ", 40)}
	var wg sync.WaitGroup
	errs := make(chan string, 8*len(names))
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				n := names[(i+g)%len(names)]
				if x.Index(n) != Index(key, n) {
					errs <- n
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for n := range errs {
		t.Errorf("Indexer and Index differ for %q", n)
	}
	if NewIndexer(Derive(master, "other")).Index(names[1]) == x.Index(names[1]) {
		t.Fatal("indexer does not depend on the key")
	}
}

func FuzzOpen(f *testing.F) {
	s, err := New()
	if err != nil {
		f.Fatal(err)
	}
	kr := NewStatic(NewKey(1))
	good, _ := s.Seal(kr, KindChunk, nil, nil, bytes.Repeat([]byte("x"), 500))
	f.Add(good)
	f.Add([]byte{1, 1, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := s.Open(kr, KindChunk, nil, nil, b)
		if err == nil && len(out) > MaxPlaintext {
			t.Fatalf("opened %d bytes", len(out))
		}
	})
}

// TestRoundTripSizes seals incompressible and compressible values on
// both sides of the compression thresholds, and beyond the encoders'
// window up to the largest value Open takes: the value is built in place
// in one buffer, so a compressed result that does not fit, or a raw one,
// must still come out whole, and never larger than the plaintext plus
// the envelope.
func TestRoundTripSizes(t *testing.T) {
	s := newSealer(t)
	kr := NewStatic(NewKey(1))
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{compressAbove, compressAbove + 1, 4 << 10, compressHarderFrom - 1, compressHarderFrom, 300 << 10, encoderWindow + 1, MaxPlaintext} {
		random := make([]byte, n)
		for i := range random {
			random[i] = byte(rng.Uint32())
		}
		text := []byte(strings.Repeat("line of a mail body, quite compressible\r\n", n/41+1)[:n])
		for _, plain := range [][]byte{random, text} {
			sealed, err := s.Seal(kr, KindChunk, []byte("u"), []byte("o"), plain)
			if err != nil {
				t.Fatal(err)
			}
			if max := headerSize + len(plain) + 16; len(sealed) > max {
				t.Fatalf("%d bytes sealed into %d, more than %d", n, len(sealed), max)
			}
			got, err := s.Open(kr, KindChunk, []byte("u"), []byte("o"), sealed)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("%d bytes: round trip failed (%v)", n, err)
			}
		}
	}
}

// TestCodersReuseMostRecent: one caller after another gets the same
// encoder or decoder again (its tables still in the CPU's caches), and
// callers at once, more than the bound, never hold more coders than the
// bound; what each of them sealed opens to what it sealed.
func TestCodersReuseMostRecent(t *testing.T) {
	s := newSealer(t)
	kr := NewStatic(NewKey(1))
	text := []byte(strings.Repeat("a line of text that zstd can shrink, ", 2000))
	for name, p := range map[string]*pool[*zstd.Encoder]{"fastest": s.enc, "default": s.encLarge} {
		for range 5 {
			if _, err := encodeAll(p, text, nil); err != nil {
				t.Fatal(err)
			}
		}
		if len(p.idle) != 1 {
			t.Fatalf("%s: %d encoders after calls one at a time, want 1", name, len(p.idle))
		}
		// Of two idle encoders, the one used last is used next.
		older, err := p.fresh()
		if err != nil {
			t.Fatal(err)
		}
		recent := p.idle[0]
		p.idle = []*zstd.Encoder{older, recent}
		if _, err := encodeAll(p, text, nil); err != nil {
			t.Fatal(err)
		}
		if len(p.idle) != 2 || p.idle[0] != older || p.idle[1] != recent {
			t.Fatalf("%s: the encoder used longest ago was taken", name)
		}
	}
	sealed, err := s.Seal(kr, KindChunk, []byte("owner"), []byte("obj"), text)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := s.Open(kr, KindChunk, []byte("owner"), []byte("obj"), sealed); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.dec.idle) != 1 {
		t.Fatalf("%d decoders after calls one at a time, want 1", len(s.dec.idle))
	}

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				plain := append([]byte(strings.Repeat("x", g*1000+i)), text...)
				if i%2 == 1 {
					plain = append(plain, base64Message(600, 3)...)
				}
				sealed, err := s.Seal(kr, KindChunk, []byte("owner"), []byte{byte(g), byte(i)}, plain)
				if err != nil {
					errs <- err
					return
				}
				got, err := s.Open(kr, KindChunk, []byte("owner"), []byte{byte(g), byte(i)}, sealed)
				if err != nil || !bytes.Equal(got, plain) {
					errs <- errors.New("a value sealed at once with others did not open to itself")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for name, n := range map[string]int{"fastest": len(s.enc.idle), "default": len(s.encLarge.idle), "decoders": len(s.dec.idle)} {
		if n < 1 || n > codersPerKind {
			t.Errorf("%s: %d idle, want 1..%d", name, n, codersPerKind)
		}
	}
}

// TestOpenAppend: OpenAppend appends each form's plaintext (stored as
// is, compressed, folded) after what dst holds, whether dst has the room
// or not, and a value that does not open leaves dst's bytes alone.
func TestOpenAppend(t *testing.T) {
	s := newSealer(t)
	kr := NewStatic(NewKey(1))
	noise := make([]byte, 300)
	for i := range noise {
		noise[i] = byte(i*7 + i/3)
	}
	values := map[string][]byte{
		"stored as is": []byte("tiny"),
		"compressed":   []byte(strings.Repeat("compressible mail body line\r\n", 1000)),
		"folded":       base64Message(100_000, 5),
	}
	for name, plain := range values {
		sealed, err := s.Seal(kr, KindChunk, []byte("u"), []byte("o"), plain)
		if err != nil {
			t.Fatal(err)
		}
		for _, room := range []int{0, len(plain) + 64} {
			dst := append(make([]byte, 0, len(noise)+room), noise...)
			got, err := s.OpenAppend(dst, kr, KindChunk, []byte("u"), []byte("o"), sealed)
			if err != nil {
				t.Fatalf("%s, room %d: %v", name, room, err)
			}
			if !bytes.Equal(got[:len(noise)], noise) || !bytes.Equal(got[len(noise):], plain) {
				t.Errorf("%s, room %d: prefix kept %v, plaintext equal %v", name, room,
					bytes.Equal(got[:len(noise)], noise), bytes.Equal(got[len(noise):], plain))
			}
			if room > 0 && &got[0] != &dst[0] {
				t.Errorf("%s: appended elsewhere though dst had room", name)
			}
		}
		tampered := bytes.Clone(sealed)
		tampered[len(tampered)-1] ^= 1
		dst := bytes.Clone(noise)
		if got, err := s.OpenAppend(dst, kr, KindChunk, []byte("u"), []byte("o"), tampered); err == nil || got != nil {
			t.Errorf("%s: a tampered value opened (%d bytes, %v)", name, len(got), err)
		}
		if !bytes.Equal(dst, noise) {
			t.Errorf("%s: a failed open changed dst", name)
		}
	}
}
