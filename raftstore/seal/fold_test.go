package seal

import (
	"bytes"
	"encoding/base64"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// base64Message returns a message with a text part and a base64
// attachment of n random bytes in 76-character lines, as mail carries it.
func base64Message(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	var b bytes.Buffer
	b.WriteString("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n")
	b.WriteString("--b\r\nContent-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 0 {
		k := min(len(enc), 76)
		b.WriteString(enc[:k] + "\r\n")
		enc = enc[k:]
	}
	b.WriteString("--b--\r\n")
	return b.Bytes()
}

func TestFoldRoundTrip(t *testing.T) {
	msg := base64Message(100_000, 1)
	f, ok := fold(nil, msg)
	if !ok {
		t.Fatal("a message that is mostly base64 was not folded")
	}
	if len(f) > len(msg)*3/4+1000 {
		t.Errorf("folded %d bytes into %d, want about three quarters", len(msg), len(f))
	}
	back, err := unfold(f)
	if err != nil || !bytes.Equal(back, msg) {
		t.Fatalf("unfold: %v, equal %v", err, bytes.Equal(back, msg))
	}
	if _, ok := fold(nil, []byte(strings.Repeat("plain text line\r\n", 5000))); ok {
		t.Error("text without base64 was folded")
	}
}

// TestFoldRunEndsAtABadLine checks runs whose lines all end at column
// 76 but are not all base64: a run ends before a line with a character
// outside the alphabet, padding, or a bare CR or LF inside it, and the
// count written before the run is the run's own (one byte for 99 lines
// where 200 were candidates, which take two).
// TestUnfoldSizesItsOutput: a large attachment unfolds into one buffer
// of exactly its size, allocated once.
func TestUnfoldSizesItsOutput(t *testing.T) {
	for _, n := range []int{10_000, 200_000, 760_000} {
		msg := base64Message(n, uint64(n))
		f, ok := fold(nil, msg)
		if !ok {
			t.Fatalf("%d bytes: not folded", n)
		}
		out, err := unfold(f)
		if err != nil || !bytes.Equal(out, msg) {
			t.Fatalf("%d bytes: unfold: %v", n, err)
		}
		if cap(out) != len(out) {
			t.Errorf("%d bytes: output of %d bytes in a buffer of %d", n, len(out), cap(out))
		}
	}
}

func TestFoldRunEndsAtABadLine(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 1))
	line := func() string {
		raw := make([]byte, 57)
		for i := range raw {
			raw[i] = byte(rng.Uint32())
		}
		return base64.StdEncoding.EncodeToString(raw) + "\r\n"
	}
	for _, bad := range []string{
		strings.Repeat("A", 75) + "*",
		strings.Repeat("A", 72) + "AA==",
		strings.Repeat("A", 40) + "\n" + strings.Repeat("A", 35),
		strings.Repeat("A", 40) + "\r" + strings.Repeat("A", 35),
	} {
		var b strings.Builder
		for i := range 200 {
			if i == 99 {
				b.WriteString(bad + "\r\n")
				continue
			}
			b.WriteString(line())
		}
		p := []byte(b.String())
		f, ok := fold(nil, p)
		if !ok {
			t.Fatalf("%q: not folded", bad)
		}
		if f[0] != foldRun || f[1] != 99 {
			t.Errorf("%q: form starts %v, want a run of 99 lines with a one-byte count", bad, f[:3])
		}
		back, err := unfold(f)
		if err != nil || !bytes.Equal(back, p) {
			t.Fatalf("%q: unfold: %v, equal %v", bad, err, bytes.Equal(back, p))
		}
	}
}

// TestSealFoldsBase64 checks that Seal folds a value with base64 lines
// (flag set, smaller than sealing it unfolded) and Open gives back the
// exact plaintext, also for lines that look like base64 but are not
// whole (padding, short, LF only).
func TestSealFoldsBase64(t *testing.T) {
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kr := NewStatic(NewKey(1))
	msg := base64Message(200_000, 2)
	odd := append(bytes.Clone(msg), "QUJD\r\nQUJDRA==\r\n"+strings.Repeat("A", 76)+"\n"+strings.Repeat("B", 75)+"\r\n"...)
	for _, plain := range [][]byte{msg, odd} {
		sealed, err := s.Seal(kr, KindChunk, []byte("owner"), []byte("obj"), plain)
		if err != nil {
			t.Fatal(err)
		}
		if sealed[1] != flagZstd|flagFolded {
			t.Errorf("flags %#x, want zstd and folded", sealed[1])
		}
		got, err := s.Open(kr, KindChunk, []byte("owner"), []byte("obj"), sealed)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("Open: %v, equal %v", err, bytes.Equal(got, plain))
		}
		// The flags are authenticated.
		tampered := bytes.Clone(sealed)
		tampered[1] = flagZstd
		if _, err := s.Open(kr, KindChunk, []byte("owner"), []byte("obj"), tampered); err == nil {
			t.Error("a value whose folded flag was cleared opened")
		}
	}
	// Folding pays: the same value compressed without it is larger.
	unfolded, _ := encodeAll(s.encLarge, msg, nil)
	sealed, _ := s.Seal(kr, KindChunk, []byte("owner"), []byte("obj"), msg)
	if len(sealed) >= len(unfolded) {
		t.Errorf("sealed folded %d bytes, compressed unfolded %d", len(sealed), len(unfolded))
	}
}

// FuzzFold checks that a folded form unfolds to what was folded, and
// that unfold never panics or returns more than MaxPlaintext on any
// input.
func FuzzFold(f *testing.F) {
	f.Add(base64Message(600, 3))
	f.Add([]byte(strings.Repeat(strings.Repeat("A", 76)+"\r\n", 5) + "x"))
	f.Add([]byte(strings.Repeat(strings.Repeat("B", 76)+"\r\n", 3) + strings.Repeat("C", 74) + "==\r\n" +
		strings.Repeat(strings.Repeat("D", 76)+"\r\n", 4)))
	f.Add([]byte{foldRun, 2, 0, 1, 2})
	f.Add([]byte{foldRaw, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, in []byte) {
		// The input as it is, and with its bytes also as base64 lines
		// between its halves.
		var lines []byte
		for enc := base64.StdEncoding.EncodeToString(in); len(enc) > 0; {
			k := min(len(enc), 76)
			lines = append(append(lines, enc[:k]...), '\r', '\n')
			enc = enc[k:]
		}
		mixed := append(append(bytes.Clone(in[:len(in)/2]), lines...), in[len(in)/2:]...)
		for _, p := range [][]byte{in, mixed} {
			if folded, ok := fold(nil, p); ok {
				back, err := unfold(folded)
				if err != nil || !bytes.Equal(back, p) {
					t.Fatalf("fold/unfold of %q: %v, got %q", p, err, back)
				}
				if cap(back) != len(back) {
					t.Fatalf("unfold sized its output %d for %d bytes", cap(back), len(back))
				}
			}
		}
		out, err := unfold(in)
		if err == nil && len(out) > MaxPlaintext {
			t.Fatalf("unfold returned %d bytes", len(out))
		}
		if size, serr := unfoldedSize(in); (serr == nil) != (err == nil) || err == nil && size != len(out) {
			t.Fatalf("unfoldedSize %d, %v; unfold %d bytes, %v", size, serr, len(out), err)
		}
	})
}

// base64Bench returns a sealer, its keyring and the 1 MiB message the
// base64 benchmarks seal and open.
func base64Bench(b *testing.B) (*Sealer, Keyring, []byte) {
	s, err := New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	return s, NewStatic(NewKey(1)), base64Message(1<<20*3/4, 3)
}

// BenchmarkSealBase64 seals a 1 MiB value that is mostly base64 lines of
// random bytes, the shape of a large attachment.
func BenchmarkSealBase64(b *testing.B) {
	s, kr, msg := base64Bench(b)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Seal(kr, KindChunk, []byte("owner"), []byte("obj"), msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenBase64 opens what BenchmarkSealBase64 seals: a fetch of
// a large attachment.
func BenchmarkOpenBase64(b *testing.B) {
	s, kr, msg := base64Bench(b)
	sealed, err := s.Seal(kr, KindChunk, []byte("owner"), []byte("obj"), msg)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Open(kr, KindChunk, []byte("owner"), []byte("obj"), sealed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFoldQuotedPrintable folds a 256 KiB chunk of quoted-printable
// text whose lines all end at column 76, as soft line breaks make them:
// every line is a candidate for a run and none is base64.
func BenchmarkFoldQuotedPrintable(b *testing.B) {
	line := strings.Repeat("caf=C3=A9 and more words ", 3)[:75] + "=\r\n"
	p := []byte(strings.Repeat(line, (256<<10)/len(line)))
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, ok := fold(nil, p); ok {
			b.Fatal("quoted-printable text was folded")
		}
	}
}

// TestScratchNeverReachesCallers seals and opens folded, compressed and
// incompressible values from several goroutines at once, holding every
// result until all are done: a value Seal or Open returned that shared
// memory with the scratch buffers the others reuse would change under
// its holder (and the race detector would see the writes).
func TestScratchNeverReachesCallers(t *testing.T) {
	s := newSealer(t)
	kr := NewStatic(NewKey(1))
	rng := rand.New(rand.NewPCG(7, 7))
	noise := make([]byte, 40_000)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	values := [][]byte{
		base64Message(100_000, 3),
		base64Message(300_000, 4),
		[]byte(strings.Repeat("a line of text that compresses well\r\n", 2000)),
		noise,
	}
	const workers, rounds = 6, 20
	type held struct{ plain, sealed, opened []byte }
	results := make([][]held, workers)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				plain := values[(w+r)%len(values)]
				sealed, err := s.Seal(kr, KindChunk, []byte("u"), []byte("o"), plain)
				if err != nil {
					errs <- err
					return
				}
				opened, err := s.Open(kr, KindChunk, []byte("u"), []byte("o"), sealed)
				if err != nil {
					errs <- err
					return
				}
				results[w] = append(results[w], held{plain, sealed, opened})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for w := range results {
		for _, h := range results[w] {
			if !bytes.Equal(h.opened, h.plain) {
				t.Fatalf("worker %d: an opened value changed after Open returned", w)
			}
			again, err := s.Open(kr, KindChunk, []byte("u"), []byte("o"), h.sealed)
			if err != nil || !bytes.Equal(again, h.plain) {
				t.Fatalf("worker %d: a sealed value changed after Seal returned: %v", w, err)
			}
		}
	}
}
