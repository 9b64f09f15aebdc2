package workload

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"net/textproto"
	"strings"
	"testing"
)

// dotWriterOutput is what textproto's DotWriter writes for data.
func dotWriterOutput(t testing.TB, data []byte) []byte {
	var b bytes.Buffer
	w := textproto.NewWriter(bufio.NewWriter(&b))
	dw := w.DotWriter()
	if _, err := dw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// writeDataOutput is what writeData writes for data.
func writeDataOutput(t testing.TB, data []byte) []byte {
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	if err := writeData(bw, data); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestWriteDataIsDotWriter checks writeData against textproto's
// DotWriter on mail as the corpus has it and on lines made of dots, CRs
// and LFs in every order.
func TestWriteDataIsDotWriter(t *testing.T) {
	cases := []string{
		"", ".", "\r", "\n", "\r\n", "\r\r\n", "\r\r\r\n", "a\r", "a\r\r", "..\r\n.\r\n",
		"Subject: x\r\n\r\nbody\r\n.\r\n..two\r\n",
		"bare\nlf\n.dot\nend",
		strings.Repeat("line of text\r\n", 1000),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = ".\r\na"[rng.IntN(4)]
		}
		cases = append(cases, string(b))
	}
	for _, c := range cases {
		want := dotWriterOutput(t, []byte(c))
		if got := writeDataOutput(t, []byte(c)); !bytes.Equal(got, want) {
			t.Fatalf("writeData(%q) = %q, DotWriter writes %q", c, got, want)
		}
	}
}

// FuzzWriteData checks writeData against textproto's DotWriter.
func FuzzWriteData(f *testing.F) {
	f.Add([]byte("a\r\n.b\r\r\n\n."))
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := writeDataOutput(t, data), dotWriterOutput(t, data); !bytes.Equal(got, want) {
			t.Fatalf("writeData(%q) = %q, DotWriter writes %q", data, got, want)
		}
	})
}
