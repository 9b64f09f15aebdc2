package schema

// MaxUserValue bounds the size of one user value (SwapUserValue).
const MaxUserValue = 64 << 10

// MaxUserValueName bounds the length of a user value's name.
const MaxUserValueName = 64

// SwapUserValue sets one of a user's small values in a mail shard only if
// it still has the value the proposer read (compare-and-set): Old, or no
// value at all when OldAbsent. A nil New deletes the value. A mismatch
// fails with ErrConflict, so concurrent sessions cannot both win. A value
// is named by Name within Scope: a mailbox id, and the value goes when
// that mailbox is deleted, or the zero id for a value of the user's. The
// store keeps what the frontends need beyond mailboxes and messages
// there: subscriptions to names with no mailbox, the highest UID a
// session has seen as \Recent.
type SwapUserValue struct {
	User      ID
	Scope     ID
	Name      string
	OldAbsent bool
	Old       []byte
	New       []byte
}

// Op implements Payload.
func (*SwapUserValue) Op() Op { return OpSwapUserValue }

func (p *SwapUserValue) encode(w *writer) {
	w.id(p.User)
	w.id(p.Scope)
	w.str(p.Name)
	w.boolean(p.OldAbsent)
	w.bytes(p.Old)
	w.boolean(p.New == nil)
	w.bytes(p.New)
}

func (p *SwapUserValue) decode(r *reader) {
	p.User = r.id()
	p.Scope = r.id()
	p.Name = r.str()
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
