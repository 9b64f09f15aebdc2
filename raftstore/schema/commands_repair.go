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
