package schema

import "time"

// Submission is a message an authenticated user sends to recipients
// outside the cluster: it goes to the outbound queue of the user's mail
// shard.
type Submission struct {
	User       string // the authenticated user's address
	From       string // envelope sender, one of the user's addresses
	Recipients []string
	Message    []byte // the full message, trace headers included
	// UTF8 says the message needs SMTPUTF8 (RFC 6531): the client asked
	// for it, or an address is not ASCII.
	UTF8 bool
	// RequireTLS is the REQUIRETLS parameter of MAIL FROM (RFC 8689):
	// the message may only travel over verified TLS to hosts that
	// support REQUIRETLS, or it is returned.
	RequireTLS bool
	// TLSOptional is a "TLS-Required: No" header field (RFC 8689
	// section 5): the recipient domain's TLS policy (MTA-STS) is
	// ignored for this message. Never set together with RequireTLS.
	TLSOptional bool
	// Fingerprint, when set, makes a retried submission of the same
	// message map to the same queue entry (see Delivery.Fingerprint).
	Fingerprint []byte
}

// RecipientStatus is where one recipient of a queued message stands.
type RecipientStatus string

// Recipient states. Queued is the only one that is not final.
const (
	RecipientQueued    RecipientStatus = "queued"
	RecipientDelivered RecipientStatus = "delivered"
	RecipientFailed    RecipientStatus = "failed"  // a permanent refusal
	RecipientExpired   RecipientStatus = "expired" // temporary failures until the expiry
)

// OutboundRecipient is one recipient of a queued message and the last
// result of delivering to it.
type OutboundRecipient struct {
	Address string          `json:"address"`
	Status  RecipientStatus `json:"status"`
	// Code, Enhanced and Reply are the last answer about this recipient:
	// the remote server's reply, or ours ("4.4.1 no answer from host").
	Code     int    `json:"code,omitempty"`
	Enhanced string `json:"enhanced,omitempty"`
	Reply    string `json:"reply,omitempty"`
	// Remote is the host that gave the answer ("" when none was reached).
	Remote  string    `json:"remote,omitempty"`
	Updated time.Time `json:"updated,omitzero"`
	// Reported is set once the sender got a report of this recipient's
	// failure.
	Reported bool `json:"reported,omitempty"`
}

// OutboundState is the part of a queue entry sealed under the sender's
// key: the envelope and what delivery learned.
type OutboundState struct {
	Sender     string              `json:"sender"` // the submitting user's address
	From       string              `json:"from"`   // envelope sender
	UTF8       bool                `json:"utf8,omitempty"`
	EightBit   bool                `json:"eight_bit,omitempty"` // the body has bytes over 127
	Recipients []OutboundRecipient `json:"recipients"`
	Attempts   int                 `json:"attempts"`
	// DelayNotified is set once the sender got the delay notice.
	DelayNotified bool `json:"delay_notified,omitempty"`
	// RequireTLS and TLSOptional are the submission's (RFC 8689).
	RequireTLS  bool `json:"require_tls,omitempty"`
	TLSOptional bool `json:"tls_optional,omitempty"`
}

// Pending returns the recipients still queued.
func (s *OutboundState) Pending() []OutboundRecipient {
	var out []OutboundRecipient
	for _, r := range s.Recipients {
		if r.Status == RecipientQueued {
			out = append(out, r)
		}
	}
	return out
}

// OutboundEntry is an outbound queue entry as the store hands it out:
// the record's clear fields with its state opened.
type OutboundEntry struct {
	ID          ID            `json:"-"`
	User        ID            `json:"-"`
	Shard       uint32        `json:"shard"`
	Size        uint64        `json:"size"`
	Created     time.Time     `json:"created"`
	NextAttempt time.Time     `json:"next_attempt"`
	Held        bool          `json:"held,omitempty"`
	Finished    time.Time     `json:"finished,omitzero"`
	Version     uint64        `json:"version"`
	State       OutboundState `json:"state"`
}

// Forwarding is a message that arrived on the MX port for recipients
// whose mail leaves the cluster again: aliases with targets outside it,
// and SRS addresses of ours that bounces come back to.
type Forwarding struct {
	From       string   // the envelope sender as received ("" for a bounce)
	Recipients []string // the recipient addresses as received
	Message    []byte   // the full message, trace headers included
	// UTF8 says the message needs SMTPUTF8 (RFC 6531).
	UTF8 bool
	// RequireTLS is the REQUIRETLS parameter the message arrived with
	// (RFC 8689 section 4.2: a relay keeps it on the next hop), and
	// TLSOptional its "TLS-Required: No" header field; as in Submission.
	RequireTLS  bool
	TLSOptional bool
	// Fingerprint, when set, makes a retried transaction map to the
	// same queue entries (see Delivery.Fingerprint).
	Fingerprint []byte
}
