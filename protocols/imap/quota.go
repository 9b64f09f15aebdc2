package imap

import (
	"strconv"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// QUOTA (RFC 9208), answered by the front. Each user has one quota root,
// named "" (the empty string), the root of every one of their mailboxes,
// with the resources that have a limit: STORAGE, the sizes of all their
// messages in units of 1024 octets (usage rounded up, the limit down),
// and MESSAGE, their number. A user without any limit has no quota
// root: GETQUOTAROOT lists none. Limits are set by the administrator
// (mailnode user quota), so SETQUOTA is refused and QUOTASET not
// advertised. STATUS DELETED-STORAGE and DELETED, which
// QUOTA=RES-STORAGE and QUOTA=RES-MESSAGE require, are the library's
// STATUS with our session's counts (mailbox.go). A change refused for
// quota gets NO [OVERQUOTA] (storeError).

// quotaRoot is the name of every user's one quota root.
const quotaRoot = ""

// quotaCapabilities are the capabilities the front adds for QUOTA.
var quotaCapabilities = []string{"QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE"}

// errNoAccount answers a command that needs a login.
var errNoAccount = &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Not authenticated"}

// runOnAccount runs fn with the session's account, for a command the
// front answers itself while the library is idle (as withView does for
// the selected mailbox).
func (s *session) runOnAccount(fn func(acct protocols.Account) error) error {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	if s.closed || s.acct == nil {
		return errNoAccount
	}
	return fn(s.acct)
}

// librarySession returns the library's session of the connection, or
// nil before the library opened it.
func (f *frontConn) librarySession() *session {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sess
}

// kib converts bytes to RFC 9208's units of 1024 octets, rounding up
// (usage) or down (limits).
func kib(n uint64, up bool) uint64 {
	if up {
		return (n + 1023) / 1024
	}
	return n / 1024
}

// quotaLine is the untagged QUOTA response of the user's root: the
// resources that have a limit.
func quotaLine(q schema.Quota) string {
	var res []string
	if q.Limit != 0 {
		res = append(res, "STORAGE "+strconv.FormatUint(kib(q.Usage, true), 10)+" "+strconv.FormatUint(kib(q.Limit, false), 10))
	}
	if q.MessageLimit != 0 {
		res = append(res, "MESSAGE "+strconv.FormatUint(q.Messages, 10)+" "+strconv.FormatUint(q.MessageLimit, 10))
	}
	return "* QUOTA " + quotaQuote(quotaRoot) + " (" + strings.Join(res, " ") + ")"
}

// limited reports whether a user has a quota root: any limit.
func limited(q schema.Quota) bool { return q.Limit != 0 || q.MessageLimit != 0 }

// quotaQuote writes s as an IMAP quoted string (s holds no CR, LF or
// NUL: the front checked it).
func quotaQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// quota answers GETQUOTA, GETQUOTAROOT and SETQUOTA.
func (f *frontConn) quota(cmd *imapwire.Command) bool {
	answer := f.answerer(cmd)
	args := topArgs(cmd.Args)
	if cmd.Name == "SETQUOTA" {
		return answer("NO [NOPERM] Quotas are set by the administrator")
	}
	if len(args) != 1 || !args[0].IsString() || len(cmd.Args) != 1 {
		return answer("BAD [CLIENTBUG] " + cmd.Name + " takes one argument")
	}
	sess := f.librarySession()
	if sess == nil {
		return answer("BAD Not authenticated")
	}
	var lines []string
	err := sess.runOnAccount(func(acct protocols.Account) error {
		ctx, cancel := sess.opContext()
		defer cancel()
		if cmd.Name == "GETQUOTAROOT" {
			name, err := f.decodeName(args[0].Value)
			if err != nil {
				return badError("Mailbox name " + imapwire.Reason(err))
			}
			if _, err := acct.Mailbox(ctx, normalizeInbox(name)); err != nil {
				return sess.storeError("getquotaroot", err)
			}
		} else if string(args[0].Value) != quotaRoot {
			return noError(imap.ResponseCodeNonExistent, "No such quota root")
		}
		q, err := acct.Quota(ctx)
		if err != nil {
			return sess.storeError(strings.ToLower(cmd.Name), err)
		}
		if cmd.Name == "GETQUOTAROOT" {
			root := "* QUOTAROOT " + quotaQuote(string(args[0].Value))
			if limited(q) {
				root += " " + quotaQuote(quotaRoot)
			}
			lines = append(lines, root)
		} else if !limited(q) {
			return noError(imap.ResponseCodeNonExistent, "No quota")
		}
		if limited(q) {
			lines = append(lines, quotaLine(q))
		}
		return nil
	})
	if err != nil {
		return answer(failedStatus(err))
	}
	for _, l := range lines {
		if f.writeLine(l) != nil {
			return false
		}
	}
	return answer("OK " + cmd.Name + " completed")
}
