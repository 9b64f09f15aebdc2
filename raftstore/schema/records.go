package schema

// Records are the values a shard's state file holds. Every record starts
// with a format version byte so that the layout can evolve.

const recordVersion = 1

// DomainRecord is a domain served by the cluster, kept in the meta shard.
type DomainRecord struct {
	ID         ID
	NameKey    NameKey
	Sealed     []byte // the name and key mode, sealed under the meta key
	WrappedKey []byte // the domain key wrapped by the master key, or nil
}

// UserRecord is an account, kept in the meta shard.
type UserRecord struct {
	ID         ID
	NameKey    NameKey
	Domain     ID
	Shard      uint32 // mail shard holding the user's mailboxes
	Sealed     []byte // address, password hash, settings; sealed under the meta key
	WrappedKey []byte // the user data key wrapped by its parent key, or nil
}

// MailboxRecord is a mailbox of a user, kept in a mail shard.
type MailboxRecord struct {
	ID            ID
	NameKey       NameKey
	Sealed        []byte // name, special use, subscription; sealed under the user key
	Inbox         bool
	UIDValidity   uint32
	UIDNext       UID
	HighestModSeq uint64
	Messages      uint32
	Size          uint64
}

// MessageRecord is one message in a mailbox, kept in a mail shard.
type MessageRecord struct {
	UID    UID
	ID     ID
	Blob   ID
	Size   uint64
	ModSeq uint64
	Sealed []byte // flags and internal date, sealed under the user key
}

// BlobRecord describes stored message bytes: Chunks sealed chunks, the
// first holding the header section. Copies of a message share one blob.
type BlobRecord struct {
	ID     ID
	Refs   uint32
	Size   uint64
	Chunks uint32
}

// UserState is a user's bookkeeping in its mail shard.
type UserState struct {
	Inbox           ID
	LastUIDValidity uint32
}

// Marshal encodes the record.
func (d *DomainRecord) Marshal() []byte {
	w := &writer{}
	w.u8(recordVersion)
	w.id(d.ID)
	w.nameKey(d.NameKey)
	w.bytes(d.Sealed)
	w.bytes(d.WrappedKey)
	return w.b
}

// Unmarshal decodes what Marshal wrote.
func (d *DomainRecord) Unmarshal(b []byte) error {
	r := &reader{b: b}
	checkVersion(r)
	d.ID = r.id()
	d.NameKey = r.nameKey()
	d.Sealed = r.bytes()
	d.WrappedKey = r.bytes()
	return r.done()
}

func (u *UserRecord) encode(w *writer) {
	w.id(u.ID)
	w.nameKey(u.NameKey)
	w.id(u.Domain)
	w.u32(u.Shard)
	w.bytes(u.Sealed)
	w.bytes(u.WrappedKey)
}

func (u *UserRecord) decode(r *reader) {
	u.ID = r.id()
	u.NameKey = r.nameKey()
	u.Domain = r.id()
	u.Shard = r.u32()
	u.Sealed = r.bytes()
	u.WrappedKey = r.bytes()
}

// Marshal encodes the record.
func (u *UserRecord) Marshal() []byte {
	w := &writer{}
	w.u8(recordVersion)
	u.encode(w)
	return w.b
}

// Unmarshal decodes what Marshal wrote.
func (u *UserRecord) Unmarshal(b []byte) error {
	r := &reader{b: b}
	checkVersion(r)
	u.decode(r)
	return r.done()
}

// Marshal encodes the record.
func (m *MailboxRecord) Marshal() []byte {
	w := &writer{}
	w.u8(recordVersion)
	w.id(m.ID)
	w.nameKey(m.NameKey)
	w.bytes(m.Sealed)
	w.boolean(m.Inbox)
	w.u32(m.UIDValidity)
	w.u32(uint32(m.UIDNext))
	w.uvarint(m.HighestModSeq)
	w.uvarint(uint64(m.Messages))
	w.uvarint(m.Size)
	return w.b
}

// Unmarshal decodes what Marshal wrote.
func (m *MailboxRecord) Unmarshal(b []byte) error {
	r := &reader{b: b}
	checkVersion(r)
	m.ID = r.id()
	m.NameKey = r.nameKey()
	m.Sealed = r.bytes()
	m.Inbox = r.boolean()
	m.UIDValidity = r.u32()
	m.UIDNext = UID(r.u32())
	m.HighestModSeq = r.uvarint()
	m.Messages = uint32(r.uvarint())
	m.Size = r.uvarint()
	return r.done()
}

// Marshal encodes the record.
func (m *MessageRecord) Marshal() []byte {
	w := &writer{}
	w.u8(recordVersion)
	w.u32(uint32(m.UID))
	w.id(m.ID)
	w.id(m.Blob)
	w.uvarint(m.Size)
	w.uvarint(m.ModSeq)
	w.bytes(m.Sealed)
	return w.b
}

// Unmarshal decodes what Marshal wrote.
func (m *MessageRecord) Unmarshal(b []byte) error {
	r := &reader{b: b}
	checkVersion(r)
	m.UID = UID(r.u32())
	m.ID = r.id()
	m.Blob = r.id()
	m.Size = r.uvarint()
	m.ModSeq = r.uvarint()
	m.Sealed = r.bytes()
	return r.done()
}

// Marshal encodes the record.
func (b *BlobRecord) Marshal() []byte {
	w := &writer{}
	w.u8(recordVersion)
	w.id(b.ID)
	w.uvarint(uint64(b.Refs))
	w.uvarint(b.Size)
	w.uvarint(uint64(b.Chunks))
	return w.b
}

// Unmarshal decodes what Marshal wrote.
func (b *BlobRecord) Unmarshal(data []byte) error {
	r := &reader{b: data}
	checkVersion(r)
	b.ID = r.id()
	b.Refs = uint32(r.uvarint())
	b.Size = r.uvarint()
	b.Chunks = uint32(r.uvarint())
	return r.done()
}

// Marshal encodes the record.
func (s *UserState) Marshal() []byte {
	w := &writer{}
	w.u8(recordVersion)
	w.id(s.Inbox)
	w.u32(s.LastUIDValidity)
	return w.b
}

// Unmarshal decodes what Marshal wrote.
func (s *UserState) Unmarshal(b []byte) error {
	r := &reader{b: b}
	checkVersion(r)
	s.Inbox = r.id()
	s.LastUIDValidity = r.u32()
	return r.done()
}

func checkVersion(r *reader) {
	if v := r.u8(); r.err == nil && v != recordVersion {
		r.fail("record version %d", v)
	}
}

// SpoolRecord is a spooled message waiting for some of its recipients'
// copies (see Spool); its chunks are stored beside it.
type SpoolRecord struct {
	ID         ID
	From       []byte
	Recipients []SpoolRecipient
	Size       uint64
	Chunks     uint32
	Time       int64 // when it was spooled, Unix nanoseconds
	Junk       bool  // copies go to the recipients' Junk mailboxes
}

// Marshal encodes the record.
func (s *SpoolRecord) Marshal() []byte {
	w := &writer{}
	w.u8(recordVersion)
	w.id(s.ID)
	w.bytes(s.From)
	w.uvarint(uint64(len(s.Recipients)))
	for _, rc := range s.Recipients {
		w.id(rc.User)
		w.u32(rc.Shard)
	}
	w.uvarint(s.Size)
	w.u32(s.Chunks)
	w.varint(s.Time)
	w.boolean(s.Junk)
	return w.b
}

// Unmarshal decodes what Marshal wrote.
func (s *SpoolRecord) Unmarshal(b []byte) error {
	r := &reader{b: b}
	checkVersion(r)
	s.ID = r.id()
	s.From = r.bytes()
	n := r.listLen(20)
	s.Recipients = make([]SpoolRecipient, n)
	for i := range s.Recipients {
		s.Recipients[i].User = r.id()
		s.Recipients[i].Shard = r.u32()
	}
	s.Size = r.uvarint()
	s.Chunks = r.u32()
	s.Time = r.varint()
	if r.more() { // records written before Junk existed end here
		s.Junk = r.boolean()
	}
	return r.done()
}
