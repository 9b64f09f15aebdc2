package imap

import (
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// appendText appends a message with the client and returns the error.
func appendText(c *imapclient.Client, mailbox, msg string) (*imap.AppendData, error) {
	cmd := c.Append(mailbox, int64(len(msg)), nil)
	if _, err := cmd.Write([]byte(msg)); err != nil {
		return nil, err
	}
	if err := cmd.Close(); err != nil {
		return nil, err
	}
	return cmd.Wait()
}

// TestQuota: QUOTA and QUOTA=RES-STORAGE are advertised; GETQUOTAROOT
// and GETQUOTA report the user's one root "" in KiB (none without a
// limit); APPEND and COPY over the limit get NO [OVERQUOTA] while MOVE
// (no change of usage) works; expunging frees space; SETQUOTA is
// refused; STATUS DELETED-STORAGE answers.
func TestQuota(t *testing.T) {
	ts := newTestServer(t)
	c := ts.login(t, nil)
	caps := c.Caps()
	for _, want := range []imap.Cap{"QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE", "MULTIAPPEND"} {
		if !caps.Has(want) {
			t.Errorf("capability %s not advertised: %v", want, caps)
		}
	}
	// No limit: no quota root.
	data, err := c.GetQuotaRoot("INBOX").Wait()
	if err != nil || len(data) != 0 {
		t.Fatalf("GETQUOTAROOT without a limit: %+v, %v", data, err)
	}

	msg := simpleMessage("a@example.net", testUser, "quota one", "Mon, 02 Jan 2026 15:04:05 +0000", strings.Repeat("x", 1500))
	if _, err := appendText(c, "INBOX", msg); err != nil {
		t.Fatalf("append: %v", err)
	}
	if err := ts.env.Mem.SetQuota(testUser, uint64(len(msg))+1100); err != nil {
		t.Fatal(err)
	}
	data, err = c.GetQuotaRoot("INBOX").Wait()
	if err != nil || len(data) != 1 {
		t.Fatalf("GETQUOTAROOT: %+v, %v", data, err)
	}
	res := data[0].Resources[imap.QuotaResourceStorage]
	if data[0].Root != "" || res.Usage != int64((len(msg)+1023)/1024) || res.Limit != int64((len(msg)+1100)/1024) {
		t.Fatalf("GETQUOTAROOT: root %q storage %+v (message of %d bytes)", data[0].Root, res, len(msg))
	}
	q, err := c.GetQuota("").Wait()
	if err != nil || q.Resources[imap.QuotaResourceStorage] != res {
		t.Fatalf("GETQUOTA \"\": %+v, %v", q, err)
	}
	if _, err := c.GetQuota("other").Wait(); imapCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("GETQUOTA of an unknown root: %v", err)
	}
	if _, err := c.GetQuotaRoot("NoSuchBox").Wait(); imapCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("GETQUOTAROOT of a missing mailbox: %v", err)
	}
	if err := c.SetQuota("", map[imap.QuotaResourceType]int64{imap.QuotaResourceStorage: 1 << 20}).Wait(); err == nil {
		t.Error("SETQUOTA by a user succeeded")
	}

	// A second copy of the message does not fit: APPEND and COPY refused.
	if _, err := appendText(c, "INBOX", msg); imapCode(err) != imap.ResponseCodeOverQuota {
		t.Fatalf("APPEND over quota: %v", err)
	}
	selectMailbox(t, c, "INBOX", false)
	if _, err := c.Copy(imap.SeqSetNum(1), "Archive").Wait(); imapCode(err) != imap.ResponseCodeOverQuota {
		t.Fatalf("COPY over quota: %v", err)
	}
	if _, err := c.Move(imap.SeqSetNum(1), "Archive").Wait(); err != nil {
		t.Fatalf("MOVE within quota: %v", err)
	}
	// Expunging frees the space.
	selectMailbox(t, c, "Archive", false)
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status("Archive", &imap.StatusOptions{DeletedStorage: true, NumDeleted: true}).Wait()
	if err != nil || st.DeletedStorage == nil || *st.DeletedStorage != int64(len(msg)) || *st.NumDeleted != 1 {
		t.Fatalf("STATUS DELETED-STORAGE: %+v, %v", st, err)
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := appendText(c, "INBOX", msg); err != nil {
		t.Fatalf("APPEND after expunge: %v", err)
	}

	// A limit on the number of messages: MESSAGE beside STORAGE.
	if err := ts.env.Mem.SetMessageQuota(testUser, 1); err != nil {
		t.Fatal(err)
	}
	q, err = c.GetQuota("").Wait()
	if err != nil || q.Resources[imap.QuotaResourceMessage] != (imapclient.QuotaResourceData{Usage: 1, Limit: 1}) || q.Resources[imap.QuotaResourceStorage].Limit == 0 {
		t.Fatalf("GETQUOTA with a message limit: %+v, %v", q, err)
	}
	if err := ts.env.Mem.SetQuota(testUser, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := appendText(c, "INBOX", "Subject: tiny\r\n\r\nx\r\n"); imapCode(err) != imap.ResponseCodeOverQuota {
		t.Fatalf("APPEND over the message limit: %v", err)
	}
	data, err = c.GetQuotaRoot("INBOX").Wait()
	if err != nil || len(data) != 1 || len(data[0].Resources) != 1 {
		t.Fatalf("GETQUOTAROOT with only a message limit: %+v, %v", data, err)
	}
}
