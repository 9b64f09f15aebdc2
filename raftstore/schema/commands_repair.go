package schema

// RepairBlob puts back one sealed piece of a user's blob, a chunk (Index)
// or its search record (SearchRecord), from a copy that opened under the
// user's key, after a replica's copy failed to open. Blobs never change
// once appended, so every replica that holds the piece holds these bytes
// unless its disk handed back others: a replica whose piece has the same
// length and other bytes takes Sealed, every other replica changes
// nothing. A piece that is gone (its blob expunged) or of another length
// is left as it is. The FSM cannot open sealed bytes; the proposer
// vouches for them, having opened them.
type RepairBlob struct {
	User         ID
	Blob         ID
	Index        uint32
	SearchRecord bool
	Sealed       []byte
}

// Op implements Payload.
func (*RepairBlob) Op() Op { return OpRepairBlob }

func (p *RepairBlob) encode(w *writer) {
	w.id(p.User)
	w.id(p.Blob)
	w.u32(p.Index)
	w.boolean(p.SearchRecord)
	w.bytes(p.Sealed)
}

func (p *RepairBlob) decode(r *reader) {
	p.User = r.id()
	p.Blob = r.id()
	p.Index = r.u32()
	p.SearchRecord = r.boolean()
	p.Sealed = r.bytes()
}

// RepairRecord puts back the sealed part of a mailbox record (UID zero)
// or of a message record (UID of Mailbox) from a copy that opened under
// the user's key, after a replica's copy failed to open. Such records
// change (a rename, a flag change), so unlike a blob's pieces the good
// copy is not the same bytes everywhere for ever: the entry names the
// damaged bytes by their SHA-256 (Damaged), and only a replica that
// still holds exactly those bytes takes Sealed. The proposer read the
// good copy on a replica that had applied at least what the damaged one
// had when it was read, so a replica that still holds the damaged bytes
// when the entry applies has seen no change of the record since, and
// Sealed is the version it lost. Every other replica, including one
// where the record changed meanwhile, changes nothing.
type RepairRecord struct {
	User    ID
	Mailbox ID
	UID     UID
	Damaged []byte
	Sealed  []byte
}

// Op implements Payload.
func (*RepairRecord) Op() Op { return OpRepairRecord }

func (p *RepairRecord) encode(w *writer) {
	w.id(p.User)
	w.id(p.Mailbox)
	w.u32(uint32(p.UID))
	w.bytes(p.Damaged)
	w.bytes(p.Sealed)
}

func (p *RepairRecord) decode(r *reader) {
	p.User = r.id()
	p.Mailbox = r.id()
	p.UID = UID(r.u32())
	p.Damaged = r.bytes()
	p.Sealed = r.bytes()
}

// RepairOutbound puts back a sealed part of an outbound queue entry, its
// state (Part 0) or chunk Part-1 of its message, from a copy that opened
// under its user's key, on the replica that still holds exactly the
// damaged bytes (Damaged, their SHA-256), as RepairRecord does: the state
// changes with every delivery attempt, and a replica whose state changed
// since the damage was read keeps the change.
type RepairOutbound struct {
	ID      ID
	Part    uint32
	Damaged []byte
	Sealed  []byte
}

// Op implements Payload.
func (*RepairOutbound) Op() Op { return OpRepairOutbound }

func (p *RepairOutbound) encode(w *writer) {
	w.id(p.ID)
	w.u32(p.Part)
	w.bytes(p.Damaged)
	w.bytes(p.Sealed)
}

func (p *RepairOutbound) decode(r *reader) {
	p.ID = r.id()
	p.Part = r.u32()
	p.Damaged = r.bytes()
	p.Sealed = r.bytes()
}
