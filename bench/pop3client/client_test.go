package pop3client

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols/pop3"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestAgainstServer drives the project's real POP3 server over loopback:
// STLS, AUTH PLAIN, listings, dot-unstuffed retrieval and deletion at
// QUIT.
func TestAgainstServer(t *testing.T) {
	env := protocoltest.NewStore(t)
	const user, pass = "alice@example.test", "correct horse"
	env.AddUser(t, user, pass)
	msgs := [][]byte{
		[]byte("Subject: one\r\n\r\nhello\r\n"),
		[]byte("Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range msgs {
		if err := env.Store.Deliver(ctx, schema.Delivery{From: "x@example.org", Recipients: []string{user}, Message: m}); err != nil {
			t.Fatal(err)
		}
	}
	serverTLS, clientTLS := protocoltest.TLS(t)
	srv, err := pop3.NewServer(pop3.Config{Hostname: "localhost", TLS: serverTLS}, env.Store)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})

	login := func(t *testing.T) *Client {
		t.Helper()
		c, err := Dial(ctx, ln.Addr().String(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.StartTLS(ctx, clientTLS); err != nil {
			t.Fatal(err)
		}
		// The server releases the maildrop lock of a dropped connection
		// when it notices the drop: poll for it, with a deadline.
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := c.AuthPlain(user, pass)
			if err == nil {
				return c
			}
			if !bytes.Contains([]byte(err.Error()), []byte("IN-USE")) || time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	c := login(t)
	n, size, err := c.Stat()
	if err != nil || n != 2 || size < int64(len(msgs[0])+len(msgs[1])) {
		t.Fatalf("STAT = %d, %d, %v", n, size, err)
	}
	list, err := c.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("LIST = %v, %v", list, err)
	}
	uidl, err := c.UIDL()
	if err != nil || len(uidl) != 2 || uidl[0].UID == "" || uidl[0].UID == uidl[1].UID {
		t.Fatalf("UIDL = %v, %v", uidl, err)
	}
	for i, want := range msgs {
		got, err := c.Retr(i + 1)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(got, want) || int64(len(got)) != list[i].Size {
			t.Fatalf("RETR %d = %q (LIST size %d), want a copy ending in %q", i+1, got, list[i].Size, want)
		}
	}
	c.MaxMessage = 10
	if _, err := c.Retr(1); err == nil {
		t.Fatal("RETR beyond MaxMessage succeeded")
	}
	// The failed RETR left the reply half read: the connection is spent.
	c.Close()

	c2 := login(t)
	if err := c2.Dele(1); err != nil {
		t.Fatal(err)
	}
	if err := c2.Dele(99); !errors.Is(err, ErrServer) {
		t.Fatalf("DELE 99 = %v, want a server error", err)
	}
	if err := c2.Quit(); err != nil {
		t.Fatal(err)
	}
	c3 := login(t)
	if n, _, err := c3.Stat(); err != nil || n != 1 {
		t.Fatalf("after DELE and QUIT, STAT = %d, %v; want 1 message", n, err)
	}
	if err := c3.AuthPlain(user, pass); err == nil {
		t.Fatal("a second AUTH in the transaction state succeeded")
	}
}

func TestBadGreeting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("220 this is SMTP\r\n"))
		c.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := Dial(ctx, ln.Addr().String(), nil); err == nil {
		c.Close()
		t.Fatal("Dial accepted an SMTP greeting")
	}
}
