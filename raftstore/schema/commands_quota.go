package schema

// maxBatchMessages bounds the messages of one AppendBatch (an IMAP
// MULTIAPPEND).
const maxBatchMessages = 1000

// AppendBatch adds several messages to one mailbox of a user atomically:
// every message or none (RFC 3502 MULTIAPPEND). Each item is an Append
// of that user and mailbox; Quota applies to them together.
type AppendBatch struct {
	User         ID
	Mailbox      ID
	Quota        uint64
	MessageQuota uint64
	Items        []Append
}

// Op implements Payload.
func (*AppendBatch) Op() Op { return OpAppendBatch }

func (p *AppendBatch) encode(w *writer) {
	w.id(p.User)
	w.id(p.Mailbox)
	w.uvarint(p.Quota)
	w.uvarint(p.MessageQuota)
	w.uvarint(uint64(len(p.Items)))
	for i := range p.Items {
		p.Items[i].encodeMessage(w)
	}
	// The items' search records, when any has one, follow every item, so
	// batches without records keep their old form.
	for i := range p.Items {
		if len(p.Items[i].SearchRecord) > 0 {
			w.uvarint(uint64(len(p.Items)))
			for k := range p.Items {
				w.bytes(p.Items[k].SearchRecord)
			}
			break
		}
	}
}

func (p *AppendBatch) decode(r *reader) {
	p.User = r.id()
	p.Mailbox = r.id()
	p.Quota = r.uvarint()
	p.MessageQuota = r.uvarint()
	n := r.listLen(70)
	if n > maxBatchMessages {
		r.fail("too many messages in one batch")
		return
	}
	p.Items = make([]Append, n)
	for i := range p.Items {
		p.Items[i].decodeMessage(r)
	}
	if r.more() {
		if r.listLen(1) != n {
			r.fail("search records do not match the batch")
			return
		}
		for i := range p.Items {
			p.Items[i].SearchRecord = r.bytes()
		}
	}
}

// encodeQuotas writes the optional quota fields at the end of a command:
// nothing when neither is set (the form written before quotas existed),
// the storage limit alone, or both.
func encodeQuotas(w *writer, bytes, messages uint64) {
	if bytes == 0 && messages == 0 {
		return
	}
	w.uvarint(bytes)
	if messages != 0 {
		w.uvarint(messages)
	}
}

// decodeQuotas reads what encodeQuotas wrote.
func decodeQuotas(r *reader) (bytes, messages uint64) {
	if r.more() {
		bytes = r.uvarint()
	}
	if r.more() {
		messages = r.uvarint()
	}
	return bytes, messages
}
