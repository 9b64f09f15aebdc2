package imap

import (
	"testing"

	"github.com/mailcluster/mailcluster/bench/corpus"
)

// benchRecordMessages are realistic messages from the benchmark corpus
// generator: a 4 KiB plain text message, an HTML alternative, and
// messages of 64 KiB and 1 MiB with a text part and base64 attachments
// (as smtp-ingest-sizes sends them).
func benchRecordMessages(b *testing.B) []struct {
	name string
	data []byte
} {
	b.Helper()
	var out []struct {
		name string
		data []byte
	}
	for _, s := range []struct {
		name string
		size int
	}{{"text-4KiB", 4 << 10}, {"attach-64KiB", 64 << 10}, {"attach-1MiB", 1 << 20}} {
		c, err := corpus.Generate(corpus.Config{Seed: 12, Messages: 1, Users: 1, Size: s.size})
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, struct {
			name string
			data []byte
		}{s.name, c.Messages[0].Data})
	}
	// The first alternative message of a mixed corpus.
	c, err := corpus.Generate(corpus.Config{Seed: 12, Messages: 40, Users: 1})
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range c.Messages {
		if m.Kind == corpus.KindAlternative {
			out = append(out[:1], append([]struct {
				name string
				data []byte
			}{{"alternative", m.Data}}, out[1:]...)...)
			break
		}
	}
	return out
}

// BenchmarkBuildSearchRecord measures what the mail store's indexer
// spends per delivered message.
func BenchmarkBuildSearchRecord(b *testing.B) {
	for _, m := range benchRecordMessages(b) {
		b.Run(m.name, func(b *testing.B) {
			b.SetBytes(int64(len(m.data)))
			b.ReportAllocs()
			for b.Loop() {
				BuildSearchRecord(m.data)
			}
		})
	}
}

// BenchmarkContainsText measures the reading matcher on the same
// messages, with a needle it does not find (so every text is read).
func BenchmarkContainsText(b *testing.B) {
	for _, m := range benchRecordMessages(b) {
		b.Run(m.name, func(b *testing.B) {
			b.SetBytes(int64(len(m.data)))
			b.ReportAllocs()
			for b.Loop() {
				containsText(m.data, "no-such-needle", true)
			}
		})
	}
}
