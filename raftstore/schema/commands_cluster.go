package schema

// SwapSetting changes a cluster setting only if it still has the value the
// proposer read (compare-and-set): Old, or no value at all when OldAbsent.
// A nil New deletes the setting. A mismatch fails with ErrConflict, so
// concurrent writers (two joins spending one token) cannot both win.
type SwapSetting struct {
	Key       string
	OldAbsent bool
	Old       []byte
	New       []byte
}

// Lease takes, renews or (with Release) gives back a named lease for
// Holder, valid until the command's time plus TTL nanoseconds. Taking a
// lease another holder keeps unexpired fails with ErrConflict. A lease
// whose holder dies expires by itself.
type Lease struct {
	Key     string
	Holder  ID
	TTL     int64
	Release bool
}

// SpoolRecipient is one recipient of a spooled message: the user and the
// mail shard that holds the user's mailboxes.
type SpoolRecipient struct {
	User  ID
	Shard uint32
}

// Spool keeps a message accepted for recipients on several shards until
// each recipient's copy is committed. The message is sealed under the
// cluster's spool key; StagedChunks chunks were staged before with the
// spool's id as both User and Blob of StageChunk, the rest are inline.
type Spool struct {
	ID           ID
	From         []byte // sealed envelope sender
	Recipients   []SpoolRecipient
	Size         uint64
	StagedChunks uint32
	Chunks       [][]byte
	// Junk sends every copy to the recipient's Junk mailbox (a content
	// filter judged the message spam). Encoded last and optional, so
	// commands written before it existed still decode.
	Junk bool
}

// SpoolDone records that the copies of a spooled message for Users are
// committed; when none is left, the spooled message is deleted.
type SpoolDone struct {
	ID    ID
	Users []ID
}

func (*SwapSetting) Op() Op { return OpSwapSetting }
func (*Lease) Op() Op       { return OpLease }
func (*Spool) Op() Op       { return OpSpool }
func (*SpoolDone) Op() Op   { return OpSpoolDone }

func (p *SwapSetting) encode(w *writer) {
	w.str(p.Key)
	w.boolean(p.OldAbsent)
	w.bytes(p.Old)
	w.boolean(p.New == nil)
	w.bytes(p.New)
}
func (p *SwapSetting) decode(r *reader) {
	p.Key = r.str()
	p.OldAbsent = r.boolean()
	p.Old = r.bytes()
	del := r.boolean()
	p.New = r.bytes()
	if del {
		p.New = nil
	} else if p.New == nil {
		p.New = []byte{}
	}
}

func (p *Lease) encode(w *writer) {
	w.str(p.Key)
	w.id(p.Holder)
	w.varint(p.TTL)
	w.boolean(p.Release)
}
func (p *Lease) decode(r *reader) {
	p.Key = r.str()
	p.Holder = r.id()
	p.TTL = r.varint()
	p.Release = r.boolean()
}

func (p *Spool) encode(w *writer) {
	w.id(p.ID)
	w.bytes(p.From)
	w.uvarint(uint64(len(p.Recipients)))
	for _, rc := range p.Recipients {
		w.id(rc.User)
		w.u32(rc.Shard)
	}
	w.uvarint(p.Size)
	w.uvarint(uint64(p.StagedChunks))
	w.chunks(p.Chunks)
	w.boolean(p.Junk)
}
func (p *Spool) decode(r *reader) {
	p.ID = r.id()
	p.From = r.bytes()
	n := r.listLen(20)
	p.Recipients = make([]SpoolRecipient, n)
	for i := range p.Recipients {
		p.Recipients[i].User = r.id()
		p.Recipients[i].Shard = r.u32()
	}
	p.Size = r.uvarint()
	staged := r.uvarint()
	if staged > MaxListLen {
		r.fail("too many staged chunks")
	}
	p.StagedChunks = uint32(staged)
	n = r.listLen(1)
	p.Chunks = make([][]byte, n)
	for i := range p.Chunks {
		p.Chunks[i] = r.chunk()
	}
	if r.more() {
		p.Junk = r.boolean()
	}
}

func (p *SpoolDone) encode(w *writer) {
	w.id(p.ID)
	w.uvarint(uint64(len(p.Users)))
	for _, u := range p.Users {
		w.id(u)
	}
}
func (p *SpoolDone) decode(r *reader) {
	p.ID = r.id()
	n := r.listLen(16)
	p.Users = make([]ID, n)
	for i := range p.Users {
		p.Users[i] = r.id()
	}
}
