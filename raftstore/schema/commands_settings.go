package schema

// MaxBatchSettings bounds the settings of one PutSettings: a decoder
// refuses more, and a proposer splits a longer run into several commands.
const MaxBatchSettings = 1024

// PutSettings stores (or, with an empty value, deletes) several settings
// of the meta shard in one command: all of them or none. It exists so
// that records written in bulk, the users' delivery records above all,
// cost the meta shard one commit per batch rather than one per record.
type PutSettings struct {
	Settings []PutSetting
}

// Op implements Payload.
func (*PutSettings) Op() Op { return OpPutSettings }

func (p *PutSettings) encode(w *writer) {
	w.uvarint(uint64(len(p.Settings)))
	for i := range p.Settings {
		p.Settings[i].encode(w)
	}
}

func (p *PutSettings) decode(r *reader) {
	n := r.listLen(2) // a key's length and a value's, one byte each at least
	if n > MaxBatchSettings {
		r.fail("%d settings in one command", n)
		return
	}
	p.Settings = make([]PutSetting, n)
	for i := range p.Settings {
		p.Settings[i].decode(r)
	}
}
