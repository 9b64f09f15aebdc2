package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	gosmtp "github.com/emersion/go-smtp"
)

// mailboxState is what must survive a restart of one mailbox.
type mailboxState struct {
	UIDValidity uint32
	UIDNext     imap.UID
	Messages    []string // "uid flags message-id size", in order
}

// captureMailbox records the state of a mailbox over IMAP.
func captureMailbox(t *testing.T, n *node, user, pass, box string) mailboxState {
	t.Helper()
	c := imapDialTLS(t, n, user, pass, nil)
	defer c.Logout()
	sel := selectBox(t, c, box, true)
	st := mailboxState{UIDValidity: sel.UIDValidity, UIDNext: sel.UIDNext}
	if sel.NumMessages == 0 {
		return st
	}
	for _, m := range fetchAll(t, c, &imap.FetchOptions{UID: true, Flags: true, Envelope: true, RFC822Size: true}) {
		flags := slices.Clone(m.Flags)
		slices.Sort(flags)
		st.Messages = append(st.Messages, fmt.Sprintf("%d %v %s %d", m.UID, flags, m.Envelope.MessageID, m.RFC822Size))
	}
	return st
}

// TestRestartPersistence stops a node with SIGTERM and starts it again on
// the same data directory: the user still logs in, and every mailbox has
// the same messages with the same UIDs, flags and UIDVALIDITY.
func TestRestartPersistence(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	if err := n.addDomain(testDomain); err != nil {
		t.Fatal(err)
	}
	const user, pass = "persist@" + testDomain, "persist-password"
	n.addUser(t, user, pass)
	for i := 1; i <= 3; i++ {
		smtpSend(t, n, "x@remote.example", []string{user}, simpleMessage("x@remote.example", user, fmt.Sprintf("persist %d", i), "kept"))
	}
	c := imapDialTLS(t, n, user, pass, nil)
	if err := c.Create("Keep/Me", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	selectBox(t, c, "INBOX", false)
	for seq, flags := range map[uint32][]imap.Flag{1: {imap.FlagFlagged}, 2: {imap.FlagSeen, imap.FlagAnswered}, 3: {"$Label1"}} {
		if err := c.Store(imap.SeqSetNum(seq), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: flags, Silent: true}, nil).Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Copy(imap.SeqSetNum(1, 3), "Keep/Me").Wait(); err != nil {
		t.Fatal(err)
	}
	// An expunged message must stay gone and its UID unused.
	if err := c.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
	appendMessage(t, c, "Drafts", simpleMessage(user, "y@remote.example", "draft", "text"), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagDraft}})
	c.Logout()

	boxes := []string{"INBOX", "Keep/Me", "Drafts"}
	before := map[string]mailboxState{}
	for _, b := range boxes {
		before[b] = captureMailbox(t, n, user, pass, b)
	}
	if len(before["INBOX"].Messages) != 2 || len(before["Keep/Me"].Messages) != 2 {
		t.Fatalf("before restart: %+v", before)
	}
	uidlBefore := pop3Run(t, n, "implicit", step("user", user), step("pass", pass), step("uidl"), step("quit")).mustOK(t).Results[2].Lines
	certBefore, err := os.ReadFile(filepath.Join(n.data, "tls", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}

	// Sessions open at shutdown: an IMAP IDLE, an SMTP transaction
	// before DATA and a POP3 session with a DELE but no QUIT. The node
	// must still stop cleanly, and none of them may change the mail.
	idler := imapDialTLS(t, n, user, pass, nil)
	selectBox(t, idler, "INBOX", false)
	idle, err := idler.Idle()
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	sc, err := netSMTPDial(n, "smtp")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Mail("x@remote.example"); err != nil {
		t.Fatal(err)
	}
	if err := sc.Rcpt(user); err != nil {
		t.Fatal(err)
	}
	pop := dialRaw(t, n.addr("pop3s"), n.clientTLS)
	pop.line()
	for _, cmd := range []string{"USER " + user, "PASS " + pass, "DELE 1"} {
		pop.send(cmd)
		if l := pop.line(); !strings.HasPrefix(l, "+OK") {
			t.Fatalf("POP3 %s: %q", strings.Fields(cmd)[0], l)
		}
	}

	if err := n.stop(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-idler.Closed():
	case <-time.After(ioTimeout):
		t.Error("the IDLE session was not closed by the shutdown")
	}
	if err := n.start(); err != nil {
		t.Fatalf("restart: %v", err)
	}

	for _, b := range boxes {
		after := captureMailbox(t, n, user, pass, b)
		if fmt.Sprint(after) != fmt.Sprint(before[b]) {
			t.Errorf("%s after restart:\n got %+v\nwant %+v", b, after, before[b])
		}
	}
	uidlAfter := pop3Run(t, n, "implicit", step("user", user), step("pass", pass), step("uidl"), step("quit")).mustOK(t).Results[2].Lines
	if !slices.Equal(uidlAfter, uidlBefore) {
		t.Errorf("POP3 UIDL after restart %q, before %q", uidlAfter, uidlBefore)
	}
	certAfter, err := os.ReadFile(filepath.Join(n.data, "tls", "cert.pem"))
	if err != nil || !bytes.Equal(certAfter, certBefore) {
		t.Errorf("the generated certificate changed across a restart (%v)", err)
	}
	// The user still logs in, with the password only.
	rc := dialRaw(t, n.addr("imaps"), n.clientTLS)
	rc.line()
	rc.send("a LOGIN " + user + " wrong-password")
	if r := rc.imapTagged("a"); !strings.HasPrefix(r[len(r)-1], "a NO") {
		t.Errorf("wrong password after restart: %q", r)
	}
	// New mail gets new UIDs after the old ones.
	smtpSend(t, n, "x@remote.example", []string{user}, simpleMessage("x@remote.example", user, "after restart", "new"))
	after := captureMailbox(t, n, user, pass, "INBOX")
	if after.UIDValidity != before["INBOX"].UIDValidity || after.UIDNext != before["INBOX"].UIDNext+1 || len(after.Messages) != 3 {
		t.Errorf("INBOX after a new delivery: %+v (before restart %+v)", after, before["INBOX"])
	}
}

// killSenders and killAcks size the kill -9 test: this many concurrent
// SMTP senders, and the node is killed once this many messages have been
// acknowledged.
const (
	killSenders = 4
	killAcks    = 40
	// killMaxPerSender bounds each sender's loop.
	killMaxPerSender = 500
)

// killBody is the body of every message of the kill -9 test; each found
// message must carry it whole.
var killBody = strings.Repeat("durability line of text, 48 bytes of content..\n", 40)

// TestKill9Durability sends mail from several concurrent SMTP clients,
// kills the node with SIGKILL while deliveries are in flight, restarts
// it, and checks that every message that got a 250 is present exactly
// once and whole.
func TestKill9Durability(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	if err := n.addDomain(testDomain); err != nil {
		t.Fatal(err)
	}
	const user, pass = "durable@" + testDomain, "durable-password"
	n.addUser(t, user, pass)
	mxAddr := n.addr("smtp")

	var (
		mu        sync.Mutex
		acked     = map[string]bool{}
		attempted = map[string]bool{}
		killed    bool
	)
	enough := make(chan struct{})
	var enoughOnce sync.Once
	var wg sync.WaitGroup
	for s := 0; s < killSenders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *gosmtp.Client
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			for i := 0; i < killMaxPerSender; i++ {
				mu.Lock()
				stop := killed
				mu.Unlock()
				if stop {
					return
				}
				if c == nil {
					conn, err := net.DialTimeout("tcp", mxAddr, ioTimeout)
					if err != nil {
						continue // the node is going down; the loop ends when killed is set
					}
					c = gosmtp.NewClient(conn)
					c.CommandTimeout, c.SubmissionTimeout = ioTimeout, ioTimeout
					if err := c.Hello("sender.e2e.test"); err != nil {
						c.Close()
						c = nil
						continue
					}
				}
				id := fmt.Sprintf("kill-%d-%d.%s@client.e2e.test", s, i, randomHex(4))
				msg := mailSpec{From: "load@remote.example", To: user, Subject: "kill " + id, MessageID: id, Text: killBody}.build()
				mu.Lock()
				attempted[id] = true
				mu.Unlock()
				if err := sendOne(c, user, msg); err != nil {
					c.Close()
					c = nil
					continue
				}
				mu.Lock()
				acked[id] = true
				if len(acked) >= killAcks {
					enoughOnce.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		}()
	}

	select {
	case <-enough:
	case <-time.After(2 * time.Minute):
		t.Fatal("not enough acknowledgements within 2 minutes")
	}
	// kill -9 now, while the other senders are mid-transaction.
	mu.Lock()
	ackedAtKill := len(acked)
	mu.Unlock()
	if err := n.kill(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	killed = true
	mu.Unlock()
	wg.Wait()
	// A 250 read after the kill was still written by the node before it
	// died, so it counts too.
	mu.Lock()
	defer mu.Unlock()

	if err := n.start(); err != nil {
		t.Fatalf("restart after kill -9: %v", err)
	}
	c := imapDialTLS(t, n, user, pass, nil)
	sel := selectBox(t, c, "INBOX", true)
	found := map[string]int{}
	if sel.NumMessages > 0 {
		text := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierText, Peek: true}
		for _, m := range fetchAll(t, c, &imap.FetchOptions{Envelope: true, BodySection: []*imap.FetchItemBodySection{text}}) {
			id := m.Envelope.MessageID
			found[id]++
			if got := string(m.FindBodySection(text)); got != crlf(killBody) {
				t.Errorf("message %s is not whole: %d body bytes, want %d", id, len(got), len(crlf(killBody)))
			}
		}
	}
	var missing, duplicated, unknown []string
	unackedPresent := 0
	for id := range acked {
		if found[id] == 0 {
			missing = append(missing, id)
		}
	}
	for id, count := range found {
		if count > 1 {
			duplicated = append(duplicated, fmt.Sprintf("%s x%d", id, count))
		}
		if !attempted[id] {
			unknown = append(unknown, id)
		}
		if !acked[id] {
			unackedPresent++
		}
	}
	t.Logf("kill -9: %d senders, %d attempted, %d acknowledged (%d when the kill was sent), %d found after restart (%d distinct), %d unacknowledged but present, %d duplicated, %d acknowledged but missing",
		killSenders, len(attempted), len(acked), ackedAtKill, sel.NumMessages, len(found), unackedPresent, len(duplicated), len(missing))
	if len(missing) > 0 {
		t.Errorf("acknowledged messages lost by kill -9: %q", missing)
	}
	if len(duplicated) > 0 {
		t.Errorf("messages stored more than once: %q", duplicated)
	}
	if len(unknown) > 0 {
		t.Errorf("messages nobody sent: %q", unknown)
	}
	if len(acked) < killAcks {
		t.Errorf("only %d acknowledgements", len(acked))
	}
	if len(attempted) == len(acked) {
		t.Log("note: no delivery was in flight at the kill")
	}
}

// sendOne runs one SMTP transaction on an open go-smtp client and
// returns nil only for a 250 to the end of DATA.
func sendOne(c *gosmtp.Client, rcpt string, msg []byte) error {
	if err := c.Mail("load@remote.example", nil); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}
