package e2e

import (
	"encoding/base64"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// TestIMAPExtensions covers what the IMAP library supports beyond the
// base commands: LOGINDISABLED before STARTTLS, ENABLE, SEARCHRES,
// CREATE-SPECIAL-USE and UNAUTHENTICATE.
func TestIMAPExtensions(t *testing.T) {
	t.Parallel()
	n := sharedNode(t)
	user, pass := n.newUser(t, "imap-ext")
	other, otherPass := n.newUser(t, "imap-ext2")

	// Before STARTTLS the server says LOGINDISABLED and refuses
	// credentials in the clear.
	rc := dialRaw(t, n.addr("imap"), nil)
	greeting := rc.line()
	if !strings.Contains(greeting, "STARTTLS") || !strings.Contains(greeting, "LOGINDISABLED") {
		t.Errorf("plain IMAP greeting %q, want STARTTLS and LOGINDISABLED", greeting)
	}
	rc.send("a LOGIN " + user + " " + pass)
	if r := rc.imapTagged("a"); !strings.HasPrefix(r[len(r)-1], "a NO") && !strings.HasPrefix(r[len(r)-1], "a BAD") {
		t.Errorf("LOGIN before STARTTLS: %q", r)
	}
	rc.send("b AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)))
	if r := rc.imapTagged("b"); !strings.HasPrefix(r[len(r)-1], "b NO") && !strings.HasPrefix(r[len(r)-1], "b BAD") {
		t.Errorf("AUTHENTICATE before STARTTLS: %q", r)
	}
	rc.close()

	for _, subject := range []string{"alpha", "beta", "alpha again"} {
		smtpSend(t, n, "x@remote.example", []string{user}, simpleMessage("x@remote.example", user, subject, "text"))
	}
	c := imapDialTLS(t, n, user, pass, nil)
	en, err := c.Enable(imap.CapIMAP4rev2).Wait()
	if err != nil || !en.Caps.Has(imap.CapIMAP4rev2) {
		t.Errorf("ENABLE IMAP4rev2: %+v %v", en, err)
	}

	// SEARCHRES over a raw connection: imapclient cannot send RETURN
	// (SAVE) nor match the answers to a FETCH of "$".
	rc = dialRaw(t, n.addr("imaps"), n.clientTLS)
	rc.line()
	for _, cmd := range []string{"a LOGIN " + user + " " + pass, "b SELECT INBOX", "c SEARCH RETURN (SAVE) SUBJECT alpha"} {
		tag, _, _ := strings.Cut(cmd, " ")
		rc.send(cmd)
		if r := rc.imapTagged(tag); !strings.HasPrefix(r[len(r)-1], tag+" OK") {
			t.Fatalf("%s: %q", cmd, r)
		}
	}
	rc.send("d FETCH $ (UID ENVELOPE)")
	r := rc.imapTagged("d")
	var fetched []string
	for _, l := range r[:len(r)-1] {
		if strings.Contains(l, " FETCH (") {
			fetched = append(fetched, l)
		}
	}
	if len(fetched) != 2 || !strings.Contains(fetched[0], `"alpha"`) || !strings.Contains(fetched[1], `"alpha again"`) || !strings.HasPrefix(r[len(r)-1], "d OK") {
		t.Errorf("FETCH $ after SEARCH RETURN (SAVE): %q", r)
	}
	rc.close()

	// CREATE-SPECIAL-USE.
	if err := c.Create("Old Mail", &imap.CreateOptions{SpecialUse: []imap.MailboxAttr{imap.MailboxAttrArchive}}).Wait(); err != nil {
		t.Fatalf("CREATE (USE (\\Archive)): %v", err)
	}
	if l := listMailboxes(t, c, &imap.ListOptions{ReturnSpecialUse: true})["Old Mail"]; l == nil || !slices.Contains(l.Attrs, imap.MailboxAttrArchive) {
		t.Errorf("LIST of a mailbox created with USE (\\Archive): %+v", l)
	}

	// UNAUTHENTICATE, then another user on the same connection.
	if err := c.Unauthenticate().Wait(); err != nil {
		t.Fatalf("UNAUTHENTICATE: %v", err)
	}
	if err := c.Login(other, otherPass).Wait(); err != nil {
		t.Fatalf("LOGIN after UNAUTHENTICATE: %v", err)
	}
	if st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil || *st.NumMessages != 0 {
		t.Errorf("the second user's INBOX: %+v %v", st, err)
	}
}

// TestHTTPEndpoints checks the node's health, readiness and metrics
// endpoints.
func TestHTTPEndpoints(t *testing.T) {
	t.Parallel()
	n := sharedNode(t)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + n.addr("http") + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 || !strings.HasPrefix(body, "ready") {
		t.Errorf("/readyz: %d %q", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "mail_node_up 1") {
		t.Errorf("/metrics: %d, mail_node_up 1 missing", code)
	}
}
