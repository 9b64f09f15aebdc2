package schema

import "errors"

// Sentinel errors of the mail data model. The shard reports them as codes
// in command results; every layer above compares them with errors.Is.
var (
	ErrInvalid        = errors.New("invalid request")
	ErrNoSuchUser     = errors.New("no such user")
	ErrUserExists     = errors.New("user already exists")
	ErrNoSuchDomain   = errors.New("no such domain")
	ErrDomainExists   = errors.New("domain already exists")
	ErrNotLocal       = errors.New("domain is not served here")
	ErrNoSuchMailbox  = errors.New("no such mailbox")
	ErrMailboxExists  = errors.New("mailbox already exists")
	ErrNoSuchMessage  = errors.New("no such message")
	ErrConflict       = errors.New("concurrent modification")
	ErrAuthFailed     = errors.New("authentication failed")
	ErrTooLarge       = errors.New("too large")
	ErrUnavailable    = errors.New("store unavailable")
	ErrCannotDelete   = errors.New("cannot be deleted")
	ErrPermissionDeny = errors.New("permission denied")
	// ErrInUse means another session holds an exclusive lock (the POP3
	// maildrop lock) on any node of the cluster.
	ErrInUse = errors.New("in use by another session")
	// ErrOverQuota means the change would take the user's mail over
	// their storage quota (RFC 9208 OVERQUOTA, SMTP 552 5.2.2).
	ErrOverQuota = errors.New("over quota")
	// ErrPartlyDelivered wraps the failures of a delivery that committed
	// the copies of some recipients but not of others.
	ErrPartlyDelivered = errors.New("delivered to some recipients only")
)

// ErrCode is the wire form of a sentinel error in a command result.
type ErrCode uint8

// Error codes carried in results. Zero means success.
const (
	CodeOK ErrCode = iota
	CodeInvalid
	CodeNoSuchUser
	CodeUserExists
	CodeNoSuchDomain
	CodeDomainExists
	CodeNoSuchMailbox
	CodeMailboxExists
	CodeNoSuchMessage
	CodeConflict
	CodeCannotDelete
	CodeOverQuota
	codeMax
)

var codeErrors = [...]error{
	CodeInvalid:       ErrInvalid,
	CodeNoSuchUser:    ErrNoSuchUser,
	CodeUserExists:    ErrUserExists,
	CodeNoSuchDomain:  ErrNoSuchDomain,
	CodeDomainExists:  ErrDomainExists,
	CodeNoSuchMailbox: ErrNoSuchMailbox,
	CodeMailboxExists: ErrMailboxExists,
	CodeNoSuchMessage: ErrNoSuchMessage,
	CodeConflict:      ErrConflict,
	CodeCannotDelete:  ErrCannotDelete,
	CodeOverQuota:     ErrOverQuota,
}

// Err returns the sentinel error for c, or nil for CodeOK.
func (c ErrCode) Err() error {
	if c == CodeOK {
		return nil
	}
	if c >= codeMax {
		return ErrInvalid
	}
	return codeErrors[c]
}

// CodeOf returns the code of a sentinel error; errors that are not
// sentinels map to CodeInvalid.
func CodeOf(err error) ErrCode {
	if err == nil {
		return CodeOK
	}
	for c := CodeInvalid; c < codeMax; c++ {
		if errors.Is(err, codeErrors[c]) {
			return c
		}
	}
	return CodeInvalid
}
