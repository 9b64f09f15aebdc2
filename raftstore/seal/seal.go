package seal

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/chacha20poly1305"
)

// KeySize is the size of every symmetric key in the hierarchy.
const KeySize = chacha20poly1305.KeySize

// MaxPlaintext bounds what Open will decompress, so a corrupt or hostile
// value cannot exhaust memory.
const MaxPlaintext = 16 << 20

const (
	version       = 1
	flagZstd      = 1
	flagFolded    = 2 // the plaintext was folded before compression (fold.go)
	headerSize    = 1 + 1 + 4 + chacha20poly1305.NonceSizeX
	compressAbove = 128 // smaller values are not worth a zstd frame
	// compressHarderFrom is the plaintext size from which Seal folds
	// base64 (fold.go) and compresses at zstd's fastest level, or, when
	// there is too little base64 to fold, at its default level. Folding,
	// measured on the chunks of 32 KiB and more of a 2,000-message
	// benchmark corpus (142 MiB, one core): 0.615 of the plaintext at
	// about 300 MiB/s (fold, the check that it unfolds, and zstd), where
	// the better level alone wrote 0.662 at 105 MiB/s. What does not fold
	// is text: HTML and plain bodies, and search records. On those of the
	// 6,000-message corpus, the default level writes what the better one
	// did (0.369 and 0.417 of the plaintext against 0.370 and 0.421, for
	// text chunks and records) in three quarters of the time (0.46 against
	// 0.60 ms for a 54 KB chunk, each with an encoder used again), and the
	// fastest level writes 0.393 and 0.432.
	//
	// Smaller values (headers, small mail, search records) are
	// compressed at zstd's fastest level. The default level wrote 0.578
	// of their plaintext instead of 0.613 (4 KiB benchmark mail, its
	// header, body and search record), but its 1 MiB hash table misses
	// the CPU cache on every lookup when sessions seal in turn: in the
	// node's profile of 4 KiB SMTP ingest, EncodeAll took 2.2-3.0 s of
	// 14.5-16.4 CPU-seconds at the default level and 1.1 s at the
	// fastest, about 15% less CPU per message in all.
	compressHarderFrom = 32 << 10
)

// Errors returned by Open.
var (
	ErrMalformed = errors.New("seal: malformed value")
	ErrNoKey     = errors.New("seal: key not in keyring")
	ErrAuth      = errors.New("seal: authentication failed")
)

// Kind says what a sealed value is; it is bound into the additional data.
type Kind uint8

// Kinds of sealed objects.
const (
	KindMailbox Kind = iota + 1
	KindMessageAttrs
	KindChunk
	KindUserKey
	KindDomainKey
	KindDomainInfo
	KindUserInfo
	KindClusterKey
	KindSetting
	KindUserValue
	KindOutbound     // the sealed state of an outbound queue entry
	KindSearchRecord // a message's search record, object: its blob id
)

// Key is a symmetric key and the id stored beside values it sealed.
type Key struct {
	ID     uint32
	Secret [KeySize]byte
}

// Keyring gives the key to seal with and finds keys by id to open with.
type Keyring interface {
	Current() Key
	Lookup(id uint32) (Key, bool)
}

// Static is a Keyring over a fixed set of keys; the last added is current.
type Static struct {
	keys    map[uint32]Key
	current Key
}

// NewStatic returns a keyring holding keys; the last one is current.
func NewStatic(keys ...Key) *Static {
	s := &Static{keys: make(map[uint32]Key, len(keys))}
	for _, k := range keys {
		s.keys[k.ID] = k
		s.current = k
	}
	return s
}

// Current returns the key new values are sealed with.
func (s *Static) Current() Key { return s.current }

// Lookup returns the key with the given id.
func (s *Static) Lookup(id uint32) (Key, bool) {
	k, ok := s.keys[id]
	return k, ok
}

// NewKey returns a random key with the given id.
func NewKey(id uint32) Key {
	k := Key{ID: id}
	if _, err := rand.Read(k.Secret[:]); err != nil {
		panic(fmt.Sprintf("seal: crypto/rand: %v", err))
	}
	return k
}

// Derive returns a subkey of secret for one purpose, so that one master
// secret can key independent uses (HKDF-SHA256, RFC 5869).
func Derive(secret [KeySize]byte, purpose string) [KeySize]byte {
	b, err := hkdf.Key(sha256.New, secret[:], nil, "mailcluster/"+purpose, KeySize)
	if err != nil {
		panic(fmt.Sprintf("seal: hkdf: %v", err)) // only fails for oversize lengths
	}
	var out [KeySize]byte
	copy(out[:], b)
	return out
}

// Index returns the keyed hash of name under an index key: how names are
// looked up without being stored.
func Index(key [KeySize]byte, name string) [32]byte {
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte(name))
	var out [32]byte
	copy(out[:], m.Sum(nil))
	return out
}

// Indexer computes Index under one key for callers that look names up
// often (every recipient of every message is found by a few of them). It
// keeps HMAC states keyed once and reset between names, where Index keys
// a new one each time: two SHA-256 blocks a name instead of four, and no
// allocation. Safe for concurrent use.
type Indexer struct {
	pool sync.Pool
}

// NewIndexer returns an Indexer for key.
func NewIndexer(key [KeySize]byte) *Indexer {
	x := &Indexer{}
	x.pool.New = func() any { return hmac.New(sha256.New, key[:]) }
	return x
}

// Index returns the keyed hash of name: Index(key, name).
func (x *Indexer) Index(name string) [32]byte {
	m := x.pool.Get().(hash.Hash)
	m.Reset()
	io.WriteString(m, name)
	var out [32]byte
	m.Sum(out[:0])
	x.pool.Put(m)
	return out
}

// Sealer seals and opens values. It shares its zstd encoders (one set
// per level) and decoders among all callers and is safe for concurrent
// use.
type Sealer struct {
	enc      *pool[*zstd.Encoder] // fastest: small values, folded base64
	encLarge *pool[*zstd.Encoder] // default level: large values that do not fold
	dec      *pool[*zstd.Decoder]
}

// encoderWindow is the zstd window of the encoders. The store seals
// message bodies in pieces of 256 KiB and other values smaller still, so a
// window of 1 MiB finds every match the default 8 MiB would in them. The
// window sizes each encoder's history buffer (twice the window at the
// default): 2 MiB instead of 16 MiB for each encoder.
const encoderWindow = 1 << 20

// codersPerKind bounds the encoders of one level, and the decoders, and
// so the compressions of that level (or decompressions) running at
// once; a caller beyond it waits.
const codersPerKind = 4

// New returns a Sealer.
func New() (*Sealer, error) {
	encoder := func(level zstd.EncoderLevel) func() (*zstd.Encoder, error) {
		return func() (*zstd.Encoder, error) {
			e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(encoderWindow))
			if err != nil {
				return nil, fmt.Errorf("seal: zstd encoder: %w", err)
			}
			return e, nil
		}
	}
	enc, err := newPool(encoder(zstd.SpeedFastest))
	if err != nil {
		return nil, err
	}
	closeEncoder := func(e *zstd.Encoder) { e.Close() }
	encLarge, err := newPool(encoder(zstd.SpeedDefault))
	if err != nil {
		enc.drain(closeEncoder)
		return nil, err
	}
	dec, err := newPool(func() (*zstd.Decoder, error) {
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(MaxPlaintext),
			zstd.WithDecoderMaxWindow(MaxPlaintext))
		if err != nil {
			return nil, fmt.Errorf("seal: zstd decoder: %w", err)
		}
		return d, nil
	})
	if err != nil {
		enc.drain(closeEncoder)
		encLarge.drain(closeEncoder)
		return nil, err
	}
	return &Sealer{enc: enc, encLarge: encLarge, dec: dec}, nil
}

// Close releases the compressors.
func (s *Sealer) Close() {
	s.enc.drain(func(e *zstd.Encoder) { e.Close() })
	s.encLarge.drain(func(e *zstd.Encoder) { e.Close() })
	s.dec.drain(func(d *zstd.Decoder) { d.Close() })
}

// pool hands out zstd encoders or decoders, the most recently used
// first. zstd's own pool (an encoder's or decoder's concurrency) hands
// them out in turn, so each call starts with the tables and history of
// the one used longest ago, cold in the CPU's caches. Measured on the
// benchmark corpus, one goroutine after another: compressing search
// records and text chunks of 32 KiB and more took 1.13 ms a value
// at the better level through zstd's pool of four, against 0.60 ms with
// one encoder used again and again (the fastest level: 0.40 against
// 0.35 ms); decompressing chunks of 16-256 KiB took 225 against 95 us.
type pool[T any] struct {
	slots chan struct{} // one token for each coder in use
	fresh func() (T, error)
	mu    sync.Mutex
	idle  []T // the most recently used last
}

// newPool returns a pool of at most codersPerKind coders made by fresh,
// and makes the first so that a bad option shows at once.
func newPool[T any](fresh func() (T, error)) (*pool[T], error) {
	p := &pool[T]{slots: make(chan struct{}, codersPerKind), fresh: fresh}
	c, err := fresh()
	if err != nil {
		return nil, err
	}
	p.idle = append(p.idle, c)
	return p, nil
}

// get takes the most recently used idle coder, or makes one, waiting
// while codersPerKind are in use. Every coder got is given back with
// put.
func (p *pool[T]) get() (T, error) {
	p.slots <- struct{}{}
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	c, err := p.fresh()
	if err != nil {
		<-p.slots
	}
	return c, err
}

// put gives back a coder from get.
func (p *pool[T]) put(c T) {
	p.mu.Lock()
	p.idle = append(p.idle, c)
	p.mu.Unlock()
	<-p.slots
}

// drain hands every idle coder to release and forgets it.
func (p *pool[T]) drain(release func(T)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.idle {
		release(c)
	}
	p.idle = nil
}

// encodeAll compresses src into one zstd frame appended to dst.
func encodeAll(p *pool[*zstd.Encoder], src, dst []byte) ([]byte, error) {
	e, err := p.get()
	if err != nil {
		return nil, err
	}
	defer p.put(e)
	return e.EncodeAll(src, dst), nil
}

// Seal compresses and encrypts plaintext for (kind, owner, object) with
// kr's current key. A small value is built in one buffer: zstd writes
// into it after the header and the cipher encrypts there in place. A
// large one is folded and compressed in scratch memory and encrypted
// from there into a value of its compressed size. Either way the bytes
// are written once by zstd and once by the cipher.
func (s *Sealer) Seal(kr Keyring, kind Kind, owner, object []byte, plaintext []byte) ([]byte, error) {
	key := kr.Current()
	aead, err := chacha20poly1305.NewX(key.Secret[:])
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	var out []byte
	flags, body := byte(0), plaintext
	if len(plaintext) >= compressHarderFrom {
		// Folded and compressed in scratch memory, then sealed into a
		// value of the size that came out: a fresh buffer of the
		// plaintext's size would be cleared whole, and a large body
		// often compresses to a fraction of it.
		zbuf, fbuf := scratch.Get().(*[]byte), scratch.Get().(*[]byte)
		enc, input, folded := s.encLarge, plaintext, byte(0)
		f, ok := fold(*fbuf, plaintext)
		if ok {
			// Folded base64 is mostly bytes that compress as well at
			// zstd's fastest level as at its better one.
			enc, input, folded = s.enc, f, flagFolded
		}
		c, err := encodeAll(enc, input, (*zbuf)[:0])
		putScratch(fbuf, f)
		if err != nil {
			putScratch(zbuf, *zbuf)
			return nil, err
		}
		defer putScratch(zbuf, c)
		if len(c) < len(plaintext) {
			body, flags = c, flagZstd|folded
		}
		out = make([]byte, headerSize, headerSize+len(body)+aead.Overhead())
	} else {
		out = make([]byte, headerSize, headerSize+len(plaintext)+aead.Overhead())
		if len(plaintext) > compressAbove {
			// EncodeAll appends in place while the output fits the
			// capacity, which is the plaintext's size: whatever is
			// smaller fits.
			c, err := encodeAll(s.enc, plaintext, out[headerSize:headerSize])
			if err != nil {
				return nil, err
			}
			if len(c) < len(plaintext) {
				body, flags = c, flagZstd
			}
		}
	}
	out[0] = version
	out[1] = flags
	binary.BigEndian.PutUint32(out[2:6], key.ID)
	if _, err := rand.Read(out[6:headerSize]); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	ad := additionalData(out[:6], kind, owner, object)
	// The ciphertext goes to out[headerSize:]: where a small value was
	// compressed in place, it overwrites body exactly, which the AEAD
	// allows.
	return aead.Seal(out[:headerSize], out[6:headerSize], body, ad), nil
}

// Open authenticates and decrypts a value sealed for (kind, owner, object).
func (s *Sealer) Open(kr Keyring, kind Kind, owner, object []byte, sealed []byte) ([]byte, error) {
	return s.OpenAppend(nil, kr, kind, owner, object, sealed)
}

// OpenAppend is Open appending the plaintext to dst, for a caller that
// puts a message together from its chunks: each is decrypted or
// decompressed in place, not into a buffer of its own to be copied from.
// On failure it returns nil, and dst's bytes are as they were.
func (s *Sealer) OpenAppend(dst []byte, kr Keyring, kind Kind, owner, object []byte, sealed []byte) ([]byte, error) {
	if len(sealed) < headerSize+chacha20poly1305.Overhead || sealed[0] != version || sealed[1]&^(flagZstd|flagFolded) != 0 ||
		sealed[1] == flagFolded {
		return nil, ErrMalformed
	}
	key, ok := kr.Lookup(binary.BigEndian.Uint32(sealed[2:6]))
	if !ok {
		return nil, ErrNoKey
	}
	aead, err := chacha20poly1305.NewX(key.Secret[:])
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	ad := additionalData(sealed[:6], kind, owner, object)
	if sealed[1]&flagZstd == 0 {
		out, err := aead.Open(dst, sealed[6:headerSize], sealed[headerSize:], ad)
		if err != nil {
			return nil, ErrAuth
		}
		return out, nil
	}
	// The compressed form, and the folded one, are only on the way to
	// the plaintext: their memory comes from scratch.
	zbuf := scratch.Get().(*[]byte)
	body, err := aead.Open((*zbuf)[:0], sealed[6:headerSize], sealed[headerSize:], ad)
	if err != nil {
		putScratch(zbuf, *zbuf)
		return nil, ErrAuth
	}
	folded := sealed[1]&flagFolded != 0
	into := dst // where zstd appends: dst, or scratch for a folded form
	var fbuf *[]byte
	if folded {
		fbuf = scratch.Get().(*[]byte)
		into = (*fbuf)[:0]
	}
	dec, err := s.dec.get()
	if err != nil {
		putScratch(zbuf, body)
		if fbuf != nil {
			putScratch(fbuf, into)
		}
		return nil, err
	}
	plain, err := dec.DecodeAll(body, into)
	s.dec.put(dec)
	putScratch(zbuf, body)
	if folded {
		defer putScratch(fbuf, plain)
	}
	if err != nil {
		return nil, fmt.Errorf("seal: decompress: %w", err)
	}
	if len(plain)-len(into) > MaxPlaintext {
		return nil, ErrMalformed
	}
	if folded {
		return unfoldAppend(dst, plain)
	}
	return plain, nil
}

// scratch holds buffers for the forms a value takes only on its way in
// or out: the folded form Seal compresses (large values), the compressed
// form Open decrypts into and the folded form it decompresses into. A
// 1 MiB message passes through several hundred KiB of each, which fresh
// buffers would have cleared first.
var scratch = sync.Pool{New: func() any { return new([]byte) }}

// maxScratch bounds the buffers scratch keeps (a value is sealed in
// pieces of at most 1 MiB).
const maxScratch = 2 << 20

// putScratch gives buf back to scratch with used's memory, which grew
// from it; nothing may read used afterwards.
func putScratch(buf *[]byte, used []byte) {
	if cap(used) > maxScratch {
		return
	}
	*buf = used[:0]
	scratch.Put(buf)
}

// KeyID returns the id of the key a value was sealed with, for rotation.
func KeyID(sealed []byte) (uint32, error) {
	if len(sealed) < headerSize {
		return 0, ErrMalformed
	}
	return binary.BigEndian.Uint32(sealed[2:6]), nil
}

func additionalData(header []byte, kind Kind, owner, object []byte) []byte {
	var b bytes.Buffer
	b.WriteString("mailcluster/seal/v1")
	b.Write(header)
	b.WriteByte(byte(kind))
	var n [binary.MaxVarintLen64]byte
	b.Write(n[:binary.PutUvarint(n[:], uint64(len(owner)))])
	b.Write(owner)
	b.Write(n[:binary.PutUvarint(n[:], uint64(len(object)))])
	b.Write(object)
	return b.Bytes()
}

// ChunkObject is the object id of chunk i of a blob.
func ChunkObject(blob [16]byte, i uint32) []byte {
	out := make([]byte, 20)
	copy(out, blob[:])
	binary.BigEndian.PutUint32(out[16:], i)
	return out
}
