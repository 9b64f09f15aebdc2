package corpus

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Default bounds and shape of a corpus.
const (
	DefaultMinSize = 1 << 10
	DefaultMaxSize = 5 << 20
	// TagHeader is the header every message starts with; its value
	// identifies the message within the corpus.
	TagHeader = "X-Mailbench-Id"
	// maxMessages bounds one corpus (it is held in memory).
	maxMessages = 1_000_000
	// minAttachmentSize is the smallest target size of a message that
	// carries attachments: below it the MIME structure alone would not fit.
	minAttachmentSize = 8 << 10
	// threadWindow is how far back a reply may look for its parent.
	threadWindow = 64
)

// Kind is the MIME shape of a message.
type Kind string

// The kinds of messages the corpus holds.
const (
	KindText        Kind = "text"        // text/plain
	KindAlternative Kind = "alternative" // multipart/alternative, text and HTML
	KindAttachment  Kind = "attachment"  // multipart/mixed with 1-3 attachments
)

// Config says which corpus to generate. Zero sizes mean the defaults.
type Config struct {
	// Seed selects the corpus: the same seed gives the same bytes.
	Seed uint64
	// Messages is how many messages to generate.
	Messages int
	// Users is the number of recipients; message i goes to one of them
	// (index Message.Rcpt), replies to the same user as their parent.
	Users int
	// Domain is the recipients' domain, used in To headers.
	Domain string
	// MinSize and MaxSize bound every message's size in bytes.
	MinSize, MaxSize int
	// Size, when set, makes every message exactly Size bytes (MinSize
	// and MaxSize are then Size): plain text below AttachmentSizeFrom,
	// a text part and attachments from there on, the way large mail is
	// made. The message-size series of smtp-ingest-sizes uses it.
	Size int
	// TagPrefix starts every message's tag, so that corpora sent to the
	// same mailboxes never share a tag.
	TagPrefix string
}

// AttachmentSizeFrom is the size from which a corpus of fixed-size
// messages (Config.Size) carries attachments.
const AttachmentSizeFrom = 16 << 10

// Message is one generated message and what the harness needs to deliver
// and check it.
type Message struct {
	// Index is the message's position in the corpus.
	Index int
	// Rcpt is the index of the recipient user.
	Rcpt int
	// From is the envelope sender.
	From string
	// Tag is the value of the X-Mailbench-Id header, unique in the corpus.
	Tag string
	// MessageID is the Message-ID header value (with angle brackets).
	MessageID string
	// Kind is the MIME shape.
	Kind Kind
	// Data is the whole message, CRLF line endings.
	Data []byte
	// Sum is the SHA-256 of Data.
	Sum [32]byte
}

// Corpus is a generated set of messages.
type Corpus struct {
	Config   Config
	Messages []Message
}

// Normalize fills in defaults and checks cfg.
func (cfg Config) Normalize() (Config, error) {
	if cfg.MinSize == 0 {
		cfg.MinSize = DefaultMinSize
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.Domain == "" {
		cfg.Domain = "bench.test"
	}
	if cfg.Size > 0 {
		if cfg.Size < 1024 || cfg.Size > DefaultMaxSize*4 {
			return cfg, fmt.Errorf("corpus: fixed size %d must be 1 KiB..%d", cfg.Size, DefaultMaxSize*4)
		}
		cfg.MinSize, cfg.MaxSize = cfg.Size, cfg.Size
		if cfg.Messages < 1 || cfg.Messages > maxMessages || cfg.Users < 1 {
			return cfg, fmt.Errorf("corpus: messages must be 1..%d and users at least 1, got %d and %d", maxMessages, cfg.Messages, cfg.Users)
		}
		return cfg, nil
	}
	switch {
	case cfg.Messages < 1 || cfg.Messages > maxMessages:
		return cfg, fmt.Errorf("corpus: messages must be 1..%d, got %d", maxMessages, cfg.Messages)
	case cfg.Users < 1:
		return cfg, fmt.Errorf("corpus: users must be at least 1, got %d", cfg.Users)
	case cfg.MinSize < 1024:
		return cfg, fmt.Errorf("corpus: minimum size %d is below 1 KiB", cfg.MinSize)
	case cfg.MaxSize < minAttachmentSize || cfg.MaxSize < cfg.MinSize:
		return cfg, fmt.Errorf("corpus: maximum size %d must be at least %d and the minimum size", cfg.MaxSize, minAttachmentSize)
	}
	return cfg, nil
}

// Generate builds the corpus cfg describes. It is deterministic: the same
// cfg always gives the same messages.
func Generate(cfg Config) (*Corpus, error) {
	cfg, err := cfg.Normalize()
	if err != nil {
		return nil, err
	}
	c := &Corpus{Config: cfg, Messages: make([]Message, cfg.Messages)}
	metas := make([]threadMeta, cfg.Messages)
	for i := range c.Messages {
		m, meta, err := generate(cfg, i, metas[:i])
		if err != nil {
			return nil, fmt.Errorf("corpus: message %d: %w", i, err)
		}
		c.Messages[i] = m
		metas[i] = meta
	}
	return c, nil
}

// threadMeta is what a reply needs from its parent.
type threadMeta struct {
	rcpt       int
	subject    string // without "Re: "
	messageID  string
	references []string
}

// generate builds message i; earlier holds the thread data of messages
// 0..i-1.
func generate(cfg Config, i int, earlier []threadMeta) (Message, threadMeta, error) {
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)))
	kind, size := pickShape(rng, cfg)
	m := Message{
		Index:     i,
		Kind:      kind,
		Tag:       fmt.Sprintf("%s%x-%d", cfg.TagPrefix, cfg.Seed, i),
		MessageID: fmt.Sprintf("<%x.%d.%08x@mailbench.example.org>", cfg.Seed, i, rng.Uint32()),
	}
	meta := threadMeta{messageID: m.MessageID}
	// About a third of the messages answer an earlier one.
	var parent *threadMeta
	if len(earlier) > 0 && rng.IntN(100) < 35 {
		lo := max(0, len(earlier)-threadWindow)
		parent = &earlier[lo+rng.IntN(len(earlier)-lo)]
	}
	if parent != nil {
		m.Rcpt = parent.rcpt
		meta.subject = parent.subject
		meta.references = append(slices.Clip(parent.references), parent.messageID)
		if len(meta.references) > 10 {
			meta.references = meta.references[len(meta.references)-10:]
		}
	} else {
		m.Rcpt = rng.IntN(cfg.Users)
		meta.subject = subject(rng)
	}
	meta.rcpt = m.Rcpt
	sender := pickSender(rng)
	m.From = sender.address

	h := headerBlock{
		tag:       m.Tag,
		messageID: m.MessageID,
		from:      sender,
		to:        fmt.Sprintf("user%d@%s", m.Rcpt, cfg.Domain),
		subject:   meta.subject,
		reply:     parent != nil,
		date:      time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC).Add(time.Duration(i) * 37 * time.Second),
	}
	if parent != nil {
		h.inReplyTo = parent.messageID
		h.references = meta.references
	}
	var buf bytes.Buffer
	buf.Grow(size + 1024)
	if err := writeMessage(&buf, rng, h, kind, size); err != nil {
		return m, meta, err
	}
	m.Data = buf.Bytes()
	if len(m.Data) > cfg.MaxSize || len(m.Data) < cfg.MinSize {
		return m, meta, fmt.Errorf("generated %d bytes, outside [%d, %d]", len(m.Data), cfg.MinSize, cfg.MaxSize)
	}
	m.Sum = sha256.Sum256(m.Data)
	return m, meta, nil
}

// pickShape draws a message kind and a target size. The mixture of three
// log-normal distributions gives the long tail: text mail around 3 KiB,
// HTML mail around 12 KiB, mail with attachments around 120 KiB with a
// tail that reaches the maximum size.
func pickShape(rng *rand.Rand, cfg Config) (Kind, int) {
	if cfg.Size > 0 {
		if cfg.Size < AttachmentSizeFrom {
			return KindText, cfg.Size
		}
		return KindAttachment, cfg.Size
	}
	var kind Kind
	var median, sigma float64
	switch r := rng.IntN(100); {
	case r < 55:
		kind, median, sigma = KindText, 3<<10, 0.7
	case r < 75:
		kind, median, sigma = KindAlternative, 12<<10, 0.8
	default:
		kind, median, sigma = KindAttachment, 120<<10, 1.4
	}
	size := int(median * math.Exp(sigma*rng.NormFloat64()))
	lo := cfg.MinSize
	if kind == KindAttachment {
		lo = max(lo, minAttachmentSize)
	}
	return kind, min(max(size, lo), cfg.MaxSize)
}

// Stats summarizes a corpus's sizes.
type Stats struct {
	Messages   int          `json:"messages"`
	TotalBytes int64        `json:"total_bytes"`
	MinBytes   int          `json:"min_bytes"`
	P50Bytes   int          `json:"p50_bytes"`
	P90Bytes   int          `json:"p90_bytes"`
	P99Bytes   int          `json:"p99_bytes"`
	MaxBytes   int          `json:"max_bytes"`
	Kinds      map[Kind]int `json:"kinds"`
	Replies    int          `json:"replies"`
}

// Stats returns the size distribution and the mix of kinds.
func (c *Corpus) Stats() Stats {
	s := Stats{Messages: len(c.Messages), Kinds: make(map[Kind]int)}
	if len(c.Messages) == 0 {
		return s
	}
	sizes := make([]int, len(c.Messages))
	for i, m := range c.Messages {
		sizes[i] = len(m.Data)
		s.TotalBytes += int64(len(m.Data))
		s.Kinds[m.Kind]++
		if bytes.Contains(headerSection(m.Data), []byte("\r\nIn-Reply-To: ")) {
			s.Replies++
		}
	}
	slices.Sort(sizes)
	rank := func(p float64) int {
		return sizes[max(0, int(math.Ceil(p*float64(len(sizes))))-1)]
	}
	s.MinBytes, s.MaxBytes = sizes[0], sizes[len(sizes)-1]
	s.P50Bytes, s.P90Bytes, s.P99Bytes = rank(0.50), rank(0.90), rank(0.99)
	return s
}

// headerSection returns the header section of a message (up to the empty
// line).
func headerSection(data []byte) []byte {
	if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
		return data[:i+2]
	}
	return data
}

// ErrNotFound means a fetched message holds no X-Mailbench-Id header.
var ErrNotFound = errors.New("no " + TagHeader + " header")

// Original locates a corpus message's bytes inside a copy fetched back
// from a server, which may have prepended trace headers (Received,
// Return-Path, Delivered-To). It returns the tag and the bytes from the
// X-Mailbench-Id line on, which must equal the original's Data.
func Original(fetched []byte) (tag string, original []byte, err error) {
	hdr := headerSection(fetched)
	prefix := []byte(TagHeader + ": ")
	at := -1
	if bytes.HasPrefix(hdr, prefix) {
		at = 0
	} else if i := bytes.Index(hdr, append([]byte("\r\n"), prefix...)); i >= 0 {
		at = i + 2
	}
	if at < 0 {
		return "", nil, ErrNotFound
	}
	end := bytes.Index(fetched[at:], []byte("\r\n"))
	if end < 0 {
		return "", nil, ErrNotFound
	}
	return string(fetched[at+len(prefix) : at+end]), fetched[at:], nil
}
