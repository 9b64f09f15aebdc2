package node

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/cluster/directory"
)

// TestQuotaEndToEnd: the real node with real SMTP and IMAP clients. The
// admin command sets a user's quota and user show reports it with the
// usage; a full mailbox is refused at RCPT with 552 5.2.2 for that
// recipient only, IMAP APPEND gets NO [OVERQUOTA], GETQUOTAROOT reports
// it; the refusals are counted; expunging frees space so mail comes in
// again; the usage is the same after a restart; "none" lifts the limit.
func TestQuotaEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	ctx := context.Background()
	if err := n.Directory().AddDomain(ctx, "example.test", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice@example.test", "bob@example.test"} {
		if err := n.Directory().AddUser(ctx, u, "password-123"); err != nil {
			t.Fatal(err)
		}
	}
	tlsCfg := clientTLS(t, cfg)
	show := func() directory.UserInfo {
		t.Helper()
		var u directory.UserInfo
		if err := json.Unmarshal([]byte(mustCLI(t, "", "user", "show", "--json", "--data", cfg.DataDir, "alice@example.test")), &u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	if u := show(); u.Quota != 0 || !u.QuotaDefault || u.Usage == nil || *u.Usage != 0 || u.Messages == nil {
		t.Fatalf("user show before any mail: %+v", u)
	}
	send := func(rcpts ...string) (refused map[string]*gosmtp.SMTPError, dataErr error) {
		t.Helper()
		c, err := gosmtp.DialStartTLS(n.Addr(ListenSMTP).String(), tlsCfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Mail("x@remote.example", nil); err != nil {
			t.Fatal(err)
		}
		refused = map[string]*gosmtp.SMTPError{}
		accepted := 0
		for _, r := range rcpts {
			var se *gosmtp.SMTPError
			if err := c.Rcpt(r, nil); errors.As(err, &se) {
				refused[r] = se
			} else if err != nil {
				t.Fatal(err)
			} else {
				accepted++
			}
		}
		if accepted == 0 {
			return refused, nil
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("From: x@remote.example\r\nSubject: quota\r\n\r\n" + strings.Repeat("quota body\r\n", 200)))
		return refused, w.Close()
	}
	if refused, err := send("alice@example.test"); len(refused) != 0 || err != nil {
		t.Fatalf("first message: %v, %v", refused, err)
	}
	used := show().Usage
	if used == nil || *used < 2400 {
		t.Fatalf("usage after one message: %v", used)
	}
	// A quota of exactly what alice uses: she is full.
	out := mustCLI(t, "", "user", "quota", "--data", cfg.DataDir, "alice@example.test", strconv.FormatUint(*used, 10))
	if !strings.Contains(out, "quota of alice@example.test") {
		t.Errorf("user quota said %q", out)
	}
	if u := show(); u.Quota != *used || u.QuotaDefault {
		t.Fatalf("user show after user quota: %+v", u)
	}
	refused, err := send("alice@example.test", "bob@example.test")
	if se := refused["alice@example.test"]; se == nil || se.Code != 552 || se.EnhancedCode != (gosmtp.EnhancedCode{5, 2, 2}) {
		t.Fatalf("RCPT of the full mailbox: %+v", refused)
	}
	if refused["bob@example.test"] != nil || err != nil {
		t.Fatalf("the other recipient: %+v, DATA %v", refused, err)
	}

	// IMAP: APPEND refused, GETQUOTAROOT reports the root.
	ic, err := imapclient.DialTLS(n.Addr(ListenIMAPS).String(), &imapclient.Options{TLSConfig: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	if err := ic.Login("alice@example.test", "password-123").Wait(); err != nil {
		t.Fatal(err)
	}
	qr, err := ic.GetQuotaRoot("INBOX").Wait()
	if err != nil || len(qr) != 1 || qr[0].Resources[imap.QuotaResourceStorage].Usage != int64((*used+1023)/1024) {
		t.Fatalf("GETQUOTAROOT: %+v, %v", qr, err)
	}
	msg := "Subject: appended\r\n\r\nhello\r\n"
	app := ic.Append("INBOX", int64(len(msg)), nil)
	app.Write([]byte(msg))
	app.Close()
	if _, err := app.Wait(); err == nil || !strings.Contains(err.Error(), "OVERQUOTA") {
		t.Fatalf("APPEND over quota: %v", err)
	}
	_, metrics := httpGet(t, n, "/metrics")
	for _, op := range []string{"deliver", "append"} {
		if !strings.Contains(metrics, `mail_quota_refused_total{operation="`+op+`"} 1`) {
			t.Errorf("metrics lack one %s refusal:\n%s", op, grepLines(metrics, "mail_quota"))
		}
	}

	// Expunging frees the space: mail comes in again.
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	ic.Logout().Wait()
	if refused, err := send("alice@example.test"); len(refused) != 0 || err != nil {
		t.Fatalf("after expunge: %v, %v", refused, err)
	}
	before := *show().Usage

	// The usage is the shard's state: the same after a restart.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, cfg)
	if u := show(); u.Usage == nil || *u.Usage != before || u.Quota != *used {
		t.Fatalf("after restart: %+v, want usage %d", u, before)
	}
	mustCLI(t, "", "user", "quota", "--data", cfg.DataDir, "alice@example.test", "none")
	if u := show(); u.Quota != 0 || u.QuotaDefault {
		t.Fatalf("after user quota none: %+v", u)
	}
	// A limit on the number of messages: alice has as many as it allows.
	count := *show().Messages
	mustCLI(t, "", "user", "quota", "--data", cfg.DataDir, "--messages", "alice@example.test", strconv.FormatUint(count, 10))
	if u := show(); u.MessageQuota != count || u.MessageQuotaDefault {
		t.Fatalf("after user quota --messages: %+v", u)
	}
	if refused, _ := send("alice@example.test"); refused["alice@example.test"] == nil || refused["alice@example.test"].Code != 552 {
		t.Fatalf("RCPT over the message limit: %+v", refused)
	}
	mustCLI(t, "", "user", "quota", "--data", cfg.DataDir, "--messages", "alice@example.test", "default")
	if u := show(); u.MessageQuota != 0 || !u.MessageQuotaDefault {
		t.Fatalf("after user quota --messages default: %+v", u)
	}
	failCLI(t, ExitUsage, "quota", "", "user", "quota", "--data", cfg.DataDir, "alice@example.test", "lots")
}
