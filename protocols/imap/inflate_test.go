package imap

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// inflateAll decodes z with the inflater, the input read through a
// small buffer, one byte per read when oneByte is set.
func inflateAll(z []byte, oneByte bool) ([]byte, error) {
	var r io.Reader = bytes.NewReader(z)
	if oneByte {
		r = iotest.OneByteReader(r)
	}
	return io.ReadAll(newInflater(bufio.NewReaderSize(r, 16)))
}

// deflateWithFlushes compresses data at level, sync-flushing at random
// points, and closes the stream (a final block).
func deflateWithFlushes(t *testing.T, data []byte, level int, rng *rand.Rand) []byte {
	t.Helper()
	var z bytes.Buffer
	w, err := flate.NewWriter(&z, level)
	if err != nil {
		t.Fatal(err)
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(70000))
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		if rng.IntN(2) == 0 {
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		rest = rest[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return z.Bytes()
}

// TestInflaterMatchesStdlib: what the standard library's deflater
// writes, at every level (stored, Huffman-only, fixed and dynamic codes,
// back-references across the whole window) with flushes anywhere, the
// inflater decodes to the same bytes, however the input arrives.
func TestInflaterMatchesStdlib(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 100<<10)
	for i := range random {
		random[i] = byte(rng.IntN(256))
	}
	var text strings.Builder
	words := []string{"APPEND", "INBOX", "Grüße", "message", "\r\n", "From: a@example.net", "日本語", "x"}
	for text.Len() < 300<<10 {
		text.WriteString(words[rng.IntN(len(words))])
		text.WriteByte(' ')
	}
	inputs := map[string][]byte{
		"empty":      nil,
		"one byte":   {'a'},
		"random":     random,
		"text":       []byte(text.String()),
		"repetitive": bytes.Repeat([]byte("abcabcabd"), 40000),
		"far copies": append(append(append([]byte{}, random[:40000]...), random[:40000]...), random[10000:20000]...),
	}
	for name, data := range inputs {
		for _, level := range []int{flate.HuffmanOnly, flate.NoCompression, flate.BestSpeed, flate.DefaultCompression, flate.BestCompression} {
			z := deflateWithFlushes(t, data, level, rng)
			for _, oneByte := range []bool{false, true} {
				if oneByte && len(z) > 200<<10 {
					continue
				}
				got, err := inflateAll(z, oneByte)
				if err != nil || !bytes.Equal(got, data) {
					t.Errorf("%s at level %d (one byte per read %v): %d bytes, %v; want %d bytes", name, level, oneByte, len(got), err, len(data))
				}
			}
		}
	}
}

// TestInflaterCorrupt: invalid or cut-off streams are errors, never a
// panic or an endless read.
func TestInflaterCorrupt(t *testing.T) {
	good := deflateWithFlushes(t, []byte(strings.Repeat("hello, world ", 100)), flate.DefaultCompression, rand.New(rand.NewPCG(3, 4)))
	for name, z := range map[string][]byte{
		"block type 3":        {0x07},
		"stored length check": {0x01, 0x05, 0x00, 0x00, 0x00},
		"distance too far":    {0x03, 0x02, 0x00}, // fixed block: a copy before any byte
		"cut off":             good[:len(good)/2],
		"no input":            nil,
	} {
		got, err := inflateAll(z, false)
		if err == nil {
			t.Errorf("%s: no error (%q)", name, got)
		}
		if name == "cut off" && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut off: %v, want io.ErrUnexpectedEOF", err)
		}
	}
}

// TestInflaterPartialFlush: a burst ending in zlib's Z_PARTIAL_FLUSH
// (a dynamic-code block; see TestCompressPartialFlush) is handed on
// whole without waiting for more input, which here never comes.
func TestInflaterPartialFlush(t *testing.T) {
	burst, err := hex.DecodeString("648d414ec2401440f793cc1d7e586948ab75a150432296a93442214c352cd8b4c3b7a065a6697f030df1369cc195bb5e8cb266fb92f7de137c042390d16c21c081ae3f19be495b0613114670b3f2b3384d710d2b89a86f39eb813716de3b677d18cee7221c4127085f67cb0e1c9d47a7fbcb995f989d0b66afb178c107b4094be22c32d74c56c9372a724192513f50e59989d7ed2ba9619794b5569c4d83a9b03eb128b746bbe0d8f79c7946136ab2a23a4717080f749767f1563f83dac4458934a8e8cbea71c6d9d8a84d8a591b6de5e6d4fc35fff6859f05")
	if err != nil {
		t.Fatal(err)
	}
	const want = 243 // the bytes of STORE, CHECK and APPEND with its message
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write(burst)
	in := newInflater(bufio.NewReader(pr))
	got := make(chan int, 1)
	go func() {
		buf := make([]byte, 4096)
		n := 0
		for n < want {
			m, err := in.Read(buf[n:])
			if err != nil {
				break
			}
			n += m
		}
		got <- n
	}()
	select {
	case n := <-got:
		if n != want {
			t.Errorf("decoded %d bytes, want %d", n, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the inflater waits for input after a partial flush")
	}
}

// FuzzInflate: on any input the inflater returns without panicking, and
// where the standard library decodes a whole stream, the inflater
// decodes the same bytes.
func FuzzInflate(f *testing.F) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, level := range []int{flate.HuffmanOnly, flate.NoCompression, flate.BestSpeed, flate.BestCompression} {
		f.Add(deflateWithFlushes(&testing.T{}, []byte("a1 LOGIN user password\r\na2 SELECT INBOX\r\n"+strings.Repeat("abc", 100)), level, rng))
	}
	f.Add([]byte{0x07})
	f.Fuzz(func(t *testing.T, z []byte) {
		const limit = 1 << 20
		got, err := io.ReadAll(io.LimitReader(newInflater(bufio.NewReader(bytes.NewReader(z))), limit))
		want, werr := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(z)), limit))
		if werr == nil && len(want) < limit && (err != nil || !bytes.Equal(got, want)) {
			t.Errorf("standard library: %d bytes; inflater: %d bytes, %v", len(want), len(got), err)
		}
	})
}
