package schema

// Op identifies the kind of a command.
type Op uint8

// Commands of the meta shard (domains, users, settings) and of mail shards
// (mailboxes and messages). One FSM applies both kinds.
const (
	OpPutDomain Op = iota + 1
	OpDeleteDomain
	OpPutUser
	OpDeleteUser
	OpPutSetting
	OpInitUser
	OpDeleteUserData
	OpCreateMailbox
	OpDeleteMailbox
	OpRenameMailbox
	OpUpdateMailbox
	OpStageChunk
	OpAppend
	OpSetAttrs
	OpCopy
	OpExpunge
	OpExpireStaged
	OpSwapSetting
	OpLease
	OpSpool
	OpSpoolDone
	OpSwapUserValue
	OpEnqueue
	OpUpdateOutbound
	OpDeleteOutbound
	OpAppendBatch
	OpPutSettings
	OpRepairBlob
	OpRepairRecord
	OpRepairOutbound
	opMax
)

var opNames = [...]string{
	OpPutDomain: "put-domain", OpDeleteDomain: "delete-domain", OpPutUser: "put-user",
	OpDeleteUser: "delete-user", OpPutSetting: "put-setting", OpInitUser: "init-user",
	OpDeleteUserData: "delete-user-data", OpCreateMailbox: "create-mailbox",
	OpDeleteMailbox: "delete-mailbox", OpRenameMailbox: "rename-mailbox",
	OpUpdateMailbox: "update-mailbox", OpStageChunk: "stage-chunk", OpAppend: "append",
	OpSetAttrs: "set-attrs", OpCopy: "copy", OpExpunge: "expunge", OpExpireStaged: "expire-staged",
	OpSwapSetting: "swap-setting", OpLease: "lease", OpSpool: "spool", OpSpoolDone: "spool-done",
	OpSwapUserValue: "swap-user-value", OpEnqueue: "enqueue", OpUpdateOutbound: "update-outbound",
	OpDeleteOutbound: "delete-outbound", OpAppendBatch: "append-batch",
	OpPutSettings: "put-settings", OpRepairBlob: "repair-blob",
	OpRepairRecord:   "repair-record",
	OpRepairOutbound: "repair-outbound",
}

// String returns the op's name, for logs and metrics.
func (op Op) String() string {
	if op == 0 || op >= opMax {
		return "unknown"
	}
	return opNames[op]
}

// Payload is the op-specific body of a command.
type Payload interface {
	Op() Op
	encode(w *writer)
	decode(r *reader)
}

// Command is one entry of a shard's Raft log.
type Command struct {
	// ReqID identifies the request; a retried request with the same id is
	// applied once and answered with the first result.
	ReqID ID
	// Time is the proposer's clock in Unix nanoseconds (for a Lease, the
	// clock of the leader that proposes it). The FSM uses it instead of
	// its own clock so that every replica applies the same state.
	Time    int64
	Payload Payload
}

const commandVersion = 1

// EncodeCommand encodes c for the Raft log.
func EncodeCommand(c Command) []byte {
	w := &writer{}
	w.u8(commandVersion)
	w.u8(uint8(c.Payload.Op()))
	w.id(c.ReqID)
	w.varint(c.Time)
	c.Payload.encode(w)
	return w.b
}

// DecodeCommand decodes a command written by EncodeCommand. Malformed input
// yields an error wrapping ErrInvalid, never a panic. The message chunks of
// the command (Append, AppendBatch, Spool, Enqueue) share b's memory
// rather than copy it: b must not be written while the command is in use.
func DecodeCommand(b []byte) (Command, error) {
	r := &reader{b: b, shareChunks: true}
	var c Command
	if v := r.u8(); r.err == nil && v != commandVersion {
		r.fail("command version %d", v)
	}
	op := Op(r.u8())
	c.ReqID = r.id()
	c.Time = r.varint()
	if r.err != nil {
		return c, r.err
	}
	p := newPayload(op)
	if p == nil {
		r.fail("unknown op %d", op)
		return c, r.err
	}
	p.decode(r)
	c.Payload = p
	return c, r.done()
}

func newPayload(op Op) Payload {
	switch op {
	case OpPutDomain:
		return &PutDomain{}
	case OpDeleteDomain:
		return &DeleteDomain{}
	case OpPutUser:
		return &PutUser{}
	case OpDeleteUser:
		return &DeleteUser{}
	case OpPutSetting:
		return &PutSetting{}
	case OpInitUser:
		return &InitUser{}
	case OpDeleteUserData:
		return &DeleteUserData{}
	case OpCreateMailbox:
		return &CreateMailbox{}
	case OpDeleteMailbox:
		return &DeleteMailbox{}
	case OpRenameMailbox:
		return &RenameMailbox{}
	case OpUpdateMailbox:
		return &UpdateMailbox{}
	case OpStageChunk:
		return &StageChunk{}
	case OpAppend:
		return &Append{}
	case OpSetAttrs:
		return &SetAttrs{}
	case OpCopy:
		return &Copy{}
	case OpExpunge:
		return &Expunge{}
	case OpExpireStaged:
		return &ExpireStaged{}
	case OpSwapSetting:
		return &SwapSetting{}
	case OpLease:
		return &Lease{}
	case OpSpool:
		return &Spool{}
	case OpSpoolDone:
		return &SpoolDone{}
	case OpSwapUserValue:
		return &SwapUserValue{}
	case OpEnqueue:
		return &Enqueue{}
	case OpUpdateOutbound:
		return &UpdateOutbound{}
	case OpDeleteOutbound:
		return &DeleteOutbound{}
	case OpAppendBatch:
		return &AppendBatch{}
	case OpPutSettings:
		return &PutSettings{}
	case OpRepairBlob:
		return &RepairBlob{}
	case OpRepairRecord:
		return &RepairRecord{}
	case OpRepairOutbound:
		return &RepairOutbound{}
	}
	return nil
}

// PutDomain adds a domain; it fails with ErrDomainExists if the name is
// taken.
type PutDomain struct{ Record DomainRecord }

// DeleteDomain removes a domain record.
type DeleteDomain struct{ Domain ID }

// PutUser creates a user (Create) or replaces an existing user's record.
type PutUser struct {
	Record UserRecord
	Create bool
}

// DeleteUser removes a user's record and with it the wrapped user key.
type DeleteUser struct{ User ID }

// PutSetting stores a cluster-wide setting in the meta shard.
type PutSetting struct {
	Key   string
	Value []byte
}

// NewMailbox describes a mailbox to create; the FSM assigns UIDVALIDITY.
type NewMailbox struct {
	ID      ID
	NameKey NameKey
	Sealed  []byte
	Inbox   bool
}

// InitUser creates a user's state and default mailboxes in a mail shard.
// Applying it to a user that exists is a no-op that succeeds.
type InitUser struct {
	User      ID
	Mailboxes []NewMailbox
}

// DeleteUserData removes everything a user has in a mail shard.
type DeleteUserData struct{ User ID }

// CreateMailbox creates one mailbox.
type CreateMailbox struct {
	User    ID
	Mailbox NewMailbox
}

// DeleteMailbox deletes a mailbox and its messages. The inbox cannot be
// deleted.
type DeleteMailbox struct {
	User    ID
	Mailbox ID
}

// MailboxRename gives one mailbox a new name.
type MailboxRename struct {
	Mailbox ID
	NameKey NameKey
	Sealed  []byte
}

// RenameMailbox renames a set of mailboxes (a mailbox and its children)
// atomically.
type RenameMailbox struct {
	User    ID
	Renames []MailboxRename
}

// UpdateMailbox replaces a mailbox's sealed attributes (its subscription).
type UpdateMailbox struct {
	User    ID
	Mailbox ID
	Sealed  []byte
}

// StageChunk stores one sealed chunk of a large message ahead of the Append
// that commits it, so that no single Raft entry carries a whole large
// message. Staged chunks not committed in time are expired.
type StageChunk struct {
	User   ID
	Blob   ID
	Index  uint32
	Sealed []byte
}

// Append adds a message to a mailbox (the user's inbox when Mailbox is
// zero). The message bytes are StagedChunks chunks staged earlier followed
// by Chunks carried inline; chunk 0 is the header section.
type Append struct {
	User         ID
	Mailbox      ID
	Message      ID
	Blob         ID
	Size         uint64
	Sealed       []byte // flags and internal date
	StagedChunks uint32
	Chunks       [][]byte
	// Quota is the user's storage limit in bytes as the proposer knows
	// it (0: none), MessageQuota their limit on the number of messages
	// (0: none); the FSM refuses the message with CodeOverQuota when the
	// user's mail would exceed either (raftstore/quota.go). Encoded only
	// when set, so entries without a quota keep their old form.
	Quota        uint64
	MessageQuota uint64
	// SearchRecord is the message's sealed search record (what SEARCH
	// and SORT read instead of the message), stored beside the blob and
	// deleted with it; nil for none. Encoded only when set (or when
	// ClaimRecent follows it). Level LevelSearchRecords.
	SearchRecord []byte
	// ClaimRecent claims the new message as \Recent in the same commit:
	// the mailbox's recent claim (the user value RecentValue) is raised
	// to the message's UID, and the result reports the claim before
	// (Result.RecentClaimed, RecentBefore). Set by a session that has the
	// mailbox selected, so that it need not claim the message with a
	// second commit. Encoded last, only when set. Level
	// LevelAppendClaimsRecent.
	ClaimRecent bool
}

// AttrUpdate replaces a message's sealed flags if its ModSeq is still
// ExpectModSeq (zero: unconditionally).
type AttrUpdate struct {
	UID          UID
	ExpectModSeq uint64
	Sealed       []byte
}

// SetAttrs updates the flags of messages in one mailbox.
type SetAttrs struct {
	User    ID
	Mailbox ID
	Updates []AttrUpdate
}

// CopyItem copies one message under a new message id with its attributes
// re-sealed for that id.
type CopyItem struct {
	UID     UID
	Message ID
	Sealed  []byte
}

// Copy copies (or, with Move, moves) messages between two mailboxes of a
// user. The copies share the stored message bytes.
type Copy struct {
	User   ID
	Source ID
	Dest   ID
	Items  []CopyItem
	Move   bool
	// Quota and MessageQuota are the user's limits in bytes and in
	// messages (0: none), checked for a copy (a move does not change the
	// user's usage); encoded only when set.
	Quota        uint64
	MessageQuota uint64
}

// Expunge removes messages from a mailbox.
type Expunge struct {
	User    ID
	Mailbox ID
	Targets []ExpungeTarget
}

// ExpireStaged drops staged chunks older than Before (Unix nanoseconds).
type ExpireStaged struct{ Before int64 }

// Op implementations.
func (*PutDomain) Op() Op      { return OpPutDomain }
func (*DeleteDomain) Op() Op   { return OpDeleteDomain }
func (*PutUser) Op() Op        { return OpPutUser }
func (*DeleteUser) Op() Op     { return OpDeleteUser }
func (*PutSetting) Op() Op     { return OpPutSetting }
func (*InitUser) Op() Op       { return OpInitUser }
func (*DeleteUserData) Op() Op { return OpDeleteUserData }
func (*CreateMailbox) Op() Op  { return OpCreateMailbox }
func (*DeleteMailbox) Op() Op  { return OpDeleteMailbox }
func (*RenameMailbox) Op() Op  { return OpRenameMailbox }
func (*UpdateMailbox) Op() Op  { return OpUpdateMailbox }
func (*StageChunk) Op() Op     { return OpStageChunk }
func (*Append) Op() Op         { return OpAppend }
func (*SetAttrs) Op() Op       { return OpSetAttrs }
func (*Copy) Op() Op           { return OpCopy }
func (*Expunge) Op() Op        { return OpExpunge }
func (*ExpireStaged) Op() Op   { return OpExpireStaged }

func (p *PutDomain) encode(w *writer) {
	w.id(p.Record.ID)
	w.nameKey(p.Record.NameKey)
	w.bytes(p.Record.Sealed)
	w.bytes(p.Record.WrappedKey)
}
func (p *PutDomain) decode(r *reader) {
	p.Record.ID = r.id()
	p.Record.NameKey = r.nameKey()
	p.Record.Sealed = r.bytes()
	p.Record.WrappedKey = r.bytes()
}

func (p *DeleteDomain) encode(w *writer) { w.id(p.Domain) }
func (p *DeleteDomain) decode(r *reader) { p.Domain = r.id() }

func (p *PutUser) encode(w *writer) { p.Record.encode(w); w.boolean(p.Create) }
func (p *PutUser) decode(r *reader) { p.Record.decode(r); p.Create = r.boolean() }

func (p *DeleteUser) encode(w *writer) { w.id(p.User) }
func (p *DeleteUser) decode(r *reader) { p.User = r.id() }

func (p *PutSetting) encode(w *writer) { w.str(p.Key); w.bytes(p.Value) }
func (p *PutSetting) decode(r *reader) { p.Key = r.str(); p.Value = r.bytes() }

func (m *NewMailbox) encode(w *writer) {
	w.id(m.ID)
	w.nameKey(m.NameKey)
	w.bytes(m.Sealed)
	w.boolean(m.Inbox)
}
func (m *NewMailbox) decode(r *reader) {
	m.ID = r.id()
	m.NameKey = r.nameKey()
	m.Sealed = r.bytes()
	m.Inbox = r.boolean()
}

func (p *InitUser) encode(w *writer) {
	w.id(p.User)
	w.uvarint(uint64(len(p.Mailboxes)))
	for i := range p.Mailboxes {
		p.Mailboxes[i].encode(w)
	}
}
func (p *InitUser) decode(r *reader) {
	p.User = r.id()
	n := r.listLen(50)
	p.Mailboxes = make([]NewMailbox, n)
	for i := range p.Mailboxes {
		p.Mailboxes[i].decode(r)
	}
}

func (p *DeleteUserData) encode(w *writer) { w.id(p.User) }
func (p *DeleteUserData) decode(r *reader) { p.User = r.id() }

func (p *CreateMailbox) encode(w *writer) { w.id(p.User); p.Mailbox.encode(w) }
func (p *CreateMailbox) decode(r *reader) { p.User = r.id(); p.Mailbox.decode(r) }

func (p *DeleteMailbox) encode(w *writer) { w.id(p.User); w.id(p.Mailbox) }
func (p *DeleteMailbox) decode(r *reader) { p.User = r.id(); p.Mailbox = r.id() }

func (p *RenameMailbox) encode(w *writer) {
	w.id(p.User)
	w.uvarint(uint64(len(p.Renames)))
	for _, rn := range p.Renames {
		w.id(rn.Mailbox)
		w.nameKey(rn.NameKey)
		w.bytes(rn.Sealed)
	}
}
func (p *RenameMailbox) decode(r *reader) {
	p.User = r.id()
	n := r.listLen(49)
	p.Renames = make([]MailboxRename, n)
	for i := range p.Renames {
		p.Renames[i].Mailbox = r.id()
		p.Renames[i].NameKey = r.nameKey()
		p.Renames[i].Sealed = r.bytes()
	}
}

func (p *UpdateMailbox) encode(w *writer) { w.id(p.User); w.id(p.Mailbox); w.bytes(p.Sealed) }
func (p *UpdateMailbox) decode(r *reader) {
	p.User = r.id()
	p.Mailbox = r.id()
	p.Sealed = r.bytes()
}

func (p *StageChunk) encode(w *writer) {
	w.id(p.User)
	w.id(p.Blob)
	w.u32(p.Index)
	w.bytes(p.Sealed)
}
func (p *StageChunk) decode(r *reader) {
	p.User = r.id()
	p.Blob = r.id()
	p.Index = r.u32()
	p.Sealed = r.bytes()
}

func (p *Append) encode(w *writer) {
	p.encodeMessage(w)
	if len(p.SearchRecord) == 0 && !p.ClaimRecent {
		encodeQuotas(w, p.Quota, p.MessageQuota)
		return
	}
	// Both quota fields written (0: none), so the record can follow, and
	// the record (empty: none) before the claim.
	w.uvarint(p.Quota)
	w.uvarint(p.MessageQuota)
	w.bytes(p.SearchRecord)
	if p.ClaimRecent {
		w.boolean(true)
	}
}
func (p *Append) decode(r *reader) {
	p.decodeMessage(r)
	p.Quota, p.MessageQuota = decodeQuotas(r)
	if r.more() {
		if p.SearchRecord = r.bytes(); len(p.SearchRecord) == 0 {
			p.SearchRecord = nil
		}
	}
	if r.more() {
		p.ClaimRecent = r.boolean()
	}
}

// encodeMessage writes every field but Quota (AppendBatch carries one
// quota for all its messages).
func (p *Append) encodeMessage(w *writer) {
	w.id(p.User)
	w.id(p.Mailbox)
	w.id(p.Message)
	w.id(p.Blob)
	w.uvarint(p.Size)
	w.bytes(p.Sealed)
	w.uvarint(uint64(p.StagedChunks))
	w.chunks(p.Chunks)
}
func (p *Append) decodeMessage(r *reader) {
	p.User = r.id()
	p.Mailbox = r.id()
	p.Message = r.id()
	p.Blob = r.id()
	p.Size = r.uvarint()
	p.Sealed = r.bytes()
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
}

func (p *SetAttrs) encode(w *writer) {
	w.id(p.User)
	w.id(p.Mailbox)
	w.uvarint(uint64(len(p.Updates)))
	for _, u := range p.Updates {
		w.u32(uint32(u.UID))
		w.uvarint(u.ExpectModSeq)
		w.bytes(u.Sealed)
	}
}
func (p *SetAttrs) decode(r *reader) {
	p.User = r.id()
	p.Mailbox = r.id()
	n := r.listLen(6)
	p.Updates = make([]AttrUpdate, n)
	for i := range p.Updates {
		p.Updates[i].UID = UID(r.u32())
		p.Updates[i].ExpectModSeq = r.uvarint()
		p.Updates[i].Sealed = r.bytes()
	}
}

func (p *Copy) encode(w *writer) {
	w.id(p.User)
	w.id(p.Source)
	w.id(p.Dest)
	w.boolean(p.Move)
	w.uvarint(uint64(len(p.Items)))
	for _, it := range p.Items {
		w.u32(uint32(it.UID))
		w.id(it.Message)
		w.bytes(it.Sealed)
	}
	encodeQuotas(w, p.Quota, p.MessageQuota)
}
func (p *Copy) decode(r *reader) {
	p.User = r.id()
	p.Source = r.id()
	p.Dest = r.id()
	p.Move = r.boolean()
	n := r.listLen(21)
	p.Items = make([]CopyItem, n)
	for i := range p.Items {
		p.Items[i].UID = UID(r.u32())
		p.Items[i].Message = r.id()
		p.Items[i].Sealed = r.bytes()
	}
	p.Quota, p.MessageQuota = decodeQuotas(r)
}

func (p *Expunge) encode(w *writer) {
	w.id(p.User)
	w.id(p.Mailbox)
	w.uvarint(uint64(len(p.Targets)))
	for _, t := range p.Targets {
		w.u32(uint32(t.UID))
		w.uvarint(t.ModSeq)
	}
}
func (p *Expunge) decode(r *reader) {
	p.User = r.id()
	p.Mailbox = r.id()
	n := r.listLen(5)
	p.Targets = make([]ExpungeTarget, n)
	for i := range p.Targets {
		p.Targets[i].UID = UID(r.u32())
		p.Targets[i].ModSeq = r.uvarint()
	}
}

func (p *ExpireStaged) encode(w *writer) { w.varint(p.Before) }
func (p *ExpireStaged) decode(r *reader) { p.Before = r.varint() }

// Result is the outcome of applying a command. Which fields are set
// depends on the op: UIDValidity and UIDs for Append, Copy and
// CreateMailbox; ModSeqs (zero where an update was skipped) for SetAttrs;
// UIDs of removed messages for Expunge.
type Result struct {
	Code        ErrCode
	UIDValidity uint32
	UIDs        []UID
	ModSeqs     []uint64
	// Index is the Raft log index of the entry that produced this answer:
	// the command's own entry, or the later entry of a retry that found
	// the first answer. A session waits for it to read its own writes. It
	// is not part of the encoded form.
	Index uint64
	// RecentClaimed says an Append with ClaimRecent claimed its message
	// as \Recent; RecentBefore is the mailbox's claim before it (the
	// messages above it, up to the new UID, are \Recent for the
	// proposing session). Encoded last, only when claimed.
	RecentClaimed bool
	RecentBefore  UID
}

// Err returns the result's error, if any.
func (r *Result) Err() error { return r.Code.Err() }

// Marshal encodes the result, for the request-id table and for forwarding.
func (r *Result) Marshal() []byte {
	w := &writer{}
	w.u8(uint8(r.Code))
	w.u32(r.UIDValidity)
	w.uvarint(uint64(len(r.UIDs)))
	for _, u := range r.UIDs {
		w.u32(uint32(u))
	}
	w.uvarint(uint64(len(r.ModSeqs)))
	for _, m := range r.ModSeqs {
		w.uvarint(m)
	}
	if r.RecentClaimed {
		w.boolean(true)
		w.u32(uint32(r.RecentBefore))
	}
	return w.b
}

// Unmarshal decodes what Marshal wrote.
func (r *Result) Unmarshal(b []byte) error {
	rd := &reader{b: b}
	r.Code = ErrCode(rd.u8())
	r.UIDValidity = rd.u32()
	n := rd.listLen(4)
	r.UIDs = make([]UID, n)
	for i := range r.UIDs {
		r.UIDs[i] = UID(rd.u32())
	}
	n = rd.listLen(1)
	r.ModSeqs = make([]uint64, n)
	for i := range r.ModSeqs {
		r.ModSeqs[i] = rd.uvarint()
	}
	if rd.more() {
		r.RecentClaimed = rd.boolean()
		r.RecentBefore = UID(rd.u32())
	}
	return rd.done()
}
