package schema

// The outbound queue: messages accepted on the submission ports for
// recipients outside the cluster, kept in the sender's mail shard until
// every recipient has a final result. The FSM knows only the scheduling
// fields in the clear (ids, times, a version, held); the envelope and the
// per-recipient results are one value sealed under the sender's key
// (OutboundState), replaced as a whole by compare-and-set on Version.

// Enqueue adds a message to the outbound queue of User. Its chunks are
// sealed like mail under User's key; StagedChunks were staged before
// with User as owner and ID as blob (StageChunk), the rest are inline.
// State is the sealed OutboundState. Applying it again (a retry of the
// same submission) changes nothing.
type Enqueue struct {
	ID           ID
	User         ID
	Size         uint64
	StagedChunks uint32
	Chunks       [][]byte
	State        []byte
	NextAttempt  int64 // Unix nanoseconds
}

// UpdateOutbound replaces the state of a queue entry if its version is
// still Version (else ErrConflict): what one delivery attempt learned,
// a hold, a release, a retry now. Finished (Unix nanoseconds, 0 while
// recipients are pending) marks the entry for removal.
type UpdateOutbound struct {
	ID          ID
	Version     uint64
	NextAttempt int64
	Held        bool
	Finished    int64
	State       []byte
}

// DeleteOutbound removes a queue entry and its chunks. Deleting an
// entry that is gone changes nothing.
type DeleteOutbound struct {
	ID ID
}

func (*Enqueue) Op() Op        { return OpEnqueue }
func (*UpdateOutbound) Op() Op { return OpUpdateOutbound }
func (*DeleteOutbound) Op() Op { return OpDeleteOutbound }

func (p *Enqueue) encode(w *writer) {
	w.id(p.ID)
	w.id(p.User)
	w.uvarint(p.Size)
	w.uvarint(uint64(p.StagedChunks))
	w.chunks(p.Chunks)
	w.bytes(p.State)
	w.varint(p.NextAttempt)
}
func (p *Enqueue) decode(r *reader) {
	p.ID = r.id()
	p.User = r.id()
	p.Size = r.uvarint()
	staged := r.uvarint()
	if staged > MaxListLen {
		r.fail("too many staged chunks")
	}
	p.StagedChunks = uint32(staged)
	n := r.listLen(1)
	p.Chunks = make([][]byte, n)
	for i := range p.Chunks {
		p.Chunks[i] = r.chunk()
	}
	p.State = r.bytes()
	p.NextAttempt = r.varint()
}

func (p *UpdateOutbound) encode(w *writer) {
	w.id(p.ID)
	w.uvarint(p.Version)
	w.varint(p.NextAttempt)
	w.boolean(p.Held)
	w.varint(p.Finished)
	w.bytes(p.State)
}
func (p *UpdateOutbound) decode(r *reader) {
	p.ID = r.id()
	p.Version = r.uvarint()
	p.NextAttempt = r.varint()
	p.Held = r.boolean()
	p.Finished = r.varint()
	p.State = r.bytes()
}

func (p *DeleteOutbound) encode(w *writer) { w.id(p.ID) }
func (p *DeleteOutbound) decode(r *reader) { p.ID = r.id() }

// OutboundRecord is a queue entry as the FSM stores it (without its
// chunks, which are stored beside it).
type OutboundRecord struct {
	ID          ID
	User        ID
	Size        uint64
	Chunks      uint32
	Created     int64 // Unix nanoseconds, the Enqueue command's time
	NextAttempt int64
	Held        bool
	Finished    int64
	Version     uint64 // 1 at Enqueue, incremented by every UpdateOutbound
	State       []byte // sealed OutboundState
}

// Marshal encodes the record.
func (o *OutboundRecord) Marshal() []byte {
	w := &writer{}
	w.u8(recordVersion)
	w.id(o.ID)
	w.id(o.User)
	w.uvarint(o.Size)
	w.u32(o.Chunks)
	w.varint(o.Created)
	w.varint(o.NextAttempt)
	w.boolean(o.Held)
	w.varint(o.Finished)
	w.uvarint(o.Version)
	w.bytes(o.State)
	return w.b
}

// Unmarshal decodes what Marshal wrote.
func (o *OutboundRecord) Unmarshal(b []byte) error {
	r := &reader{b: b}
	checkVersion(r)
	o.ID = r.id()
	o.User = r.id()
	o.Size = r.uvarint()
	o.Chunks = r.u32()
	o.Created = r.varint()
	o.NextAttempt = r.varint()
	o.Held = r.boolean()
	o.Finished = r.varint()
	o.Version = r.uvarint()
	o.State = r.bytes()
	return r.done()
}
