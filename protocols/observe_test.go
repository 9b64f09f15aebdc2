package protocols_test

import (
	"crypto/tls"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

// TestConnObserver checks what a TimeoutListener tells its observer: an
// open and one close per connection (however often it is closed), the
// bytes each way as they cross the wire, and the TLS negotiated by an
// implicit handshake and by STARTTLS.
func TestConnObserver(t *testing.T) {
	for _, implicit := range []bool{false, true} {
		name := "starttls"
		if implicit {
			name = "implicit"
		}
		t.Run(name, func(t *testing.T) {
			rec := protocoltest.NewRecorder()
			s := startLineServer(t, lineServerConfig{listener: protocols.TimeoutListenerConfig{
				ImplicitTLS: implicit, StartTLS: "STARTTLS", Observer: rec,
			}})
			var c *protocoltest.LineClient
			if implicit {
				c = s.dialTLS(t)
				c.Expect("hello")
			} else {
				c = s.dial(t)
				c.Expect("hello")
				startTLS(c, s.clientTLS)
			}
			cmd(c, "NOOP", "ok")
			protocoltest.WaitFor(t, protocoltest.WantCounts("tls", rec.TLS, map[string]int{
				"TLS 1.3 " + tls.CipherSuiteName(c.Conn().(*tls.Conn).ConnectionState().CipherSuite): 1,
			}, true))
			if opened, closed := rec.Conns(); opened != 1 || closed != 0 {
				t.Fatalf("open connection: opened %d, closed %d", opened, closed)
			}
			read, written := rec.Bytes()
			// At least the plaintext ("NOOP\r\n", "hello\r\n" and "ok\r\n")
			// plus a TLS handshake each way.
			if read < 6+200 || written < 11+200 {
				t.Errorf("bytes read %d, written %d: too few for a handshake and two lines", read, written)
			}
			c.Conn().Close()
			protocoltest.WaitFor(t, func() string {
				if opened, closed := rec.Conns(); opened != 1 || closed != 1 {
					return "closed connection not reported"
				}
				return ""
			})
		})
	}
}

// TestConnObserverClosedOnce checks that a connection closed twice (the
// frontend and the server's shutdown both close it) is counted closed
// once, and that its bytes are counted whether or not a TLS handshake
// ever happens.
func TestConnObserverClosedOnce(t *testing.T) {
	rec := protocoltest.NewRecorder()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := protocols.NewTimeoutListener(raw, protocols.TimeoutListenerConfig{Observer: rec})
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			return
		}
		c.Write([]byte("abc"))
		c.Close()
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	n, _ := c.Read(buf)
	c.Write([]byte("hello"))
	c.Close()
	c.Close()
	if opened, closed := rec.Conns(); opened != 1 || closed != 1 {
		t.Errorf("opened %d, closed %d; want 1 and 1", opened, closed)
	}
	if read, written := rec.Bytes(); read != int64(n) || n == 0 || written > 5 {
		t.Errorf("bytes read %d (of %d), written %d", read, n, written)
	}
	if len(rec.TLS()) != 0 {
		t.Errorf("TLS reported without a handshake: %v", rec.TLS())
	}
}

// TestClassifyReply checks the result and reason class of delivery
// replies, after the subject of their RFC 3463 code.
func TestClassifyReply(t *testing.T) {
	tests := []struct {
		code     int
		enhanced [3]int
		result   protocols.DeliveryResult
		class    protocols.ReplyClass
	}{
		{250, [3]int{2, 0, 0}, protocols.DeliveryAccepted, protocols.ClassNone},
		{451, [3]int{4, 3, 0}, protocols.DeliveryTemporary, protocols.ClassSystem},
		{421, [3]int{4, 4, 2}, protocols.DeliveryTemporary, protocols.ClassNetwork},
		{451, [3]int{4, 7, 1}, protocols.DeliveryTemporary, protocols.ClassPolicy},
		{550, [3]int{5, 1, 1}, protocols.DeliveryPermanent, protocols.ClassAddress},
		{552, [3]int{5, 2, 2}, protocols.DeliveryPermanent, protocols.ClassMailbox},
		{552, [3]int{5, 3, 4}, protocols.DeliveryPermanent, protocols.ClassSystem},
		{503, [3]int{5, 5, 1}, protocols.DeliveryPermanent, protocols.ClassProtocol},
		{554, [3]int{5, 6, 0}, protocols.DeliveryPermanent, protocols.ClassContent},
		{554, [3]int{5, 7, 1}, protocols.DeliveryPermanent, protocols.ClassPolicy},
		{554, [3]int{5, 0, 0}, protocols.DeliveryPermanent, protocols.ClassOther},
		{554, [3]int{5, 9, 9}, protocols.DeliveryPermanent, protocols.ClassOther},
		{554, [3]int{-1, -1, -1}, protocols.DeliveryPermanent, protocols.ClassOther},
	}
	for _, tt := range tests {
		result, class := protocols.ClassifyReply(tt.code, tt.enhanced)
		if result != tt.result || class != tt.class {
			t.Errorf("ClassifyReply(%d, %v) = %s, %s; want %s, %s", tt.code, tt.enhanced, result, class, tt.result, tt.class)
		}
	}
}

// TestObserveHandshakes checks that the hooks of ObserveHandshakes run
// for a handshake, with the connection it runs on, without replacing
// the configuration's own hooks (those of TrackHandshakes here).
func TestObserveHandshakes(t *testing.T) {
	serverTLS, clientTLS := protocoltest.TLS(t)
	var ownVerify atomic.Int32
	serverTLS.VerifyConnection = func(tls.ConnectionState) error { ownVerify.Add(1); return nil }
	var started, verified atomic.Int32
	var sawConn atomic.Value
	cfg := protocols.ObserveHandshakes(protocols.TrackHandshakes(serverTLS), func(c net.Conn) func(*tls.ConnectionState) {
		started.Add(1)
		sawConn.Store(c.LocalAddr().String())
		return func(cs *tls.ConnectionState) {
			if cs.Version >= tls.VersionTLS12 {
				verified.Add(1)
			}
		}
	})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	done := make(chan error, 1)
	go func() {
		c, err := raw.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- tls.Server(c, cfg).Handshake()
	}()
	c, err := tls.Dial("tcp", raw.Addr().String(), clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if started.Load() != 1 || verified.Load() != 1 || ownVerify.Load() != 1 {
		t.Errorf("started %d, verified %d, own VerifyConnection %d; want 1 each", started.Load(), verified.Load(), ownVerify.Load())
	}
	if sawConn.Load() != raw.Addr().String() {
		t.Errorf("started saw a connection at %v, want %s", sawConn.Load(), raw.Addr())
	}
}

// TestCommandTimer checks that a timed command is reported once: when
// it finishes or is confirmed, or as failed (lasting until its last
// progress) when it is flushed or another one starts.
func TestCommandTimer(t *testing.T) {
	rec := protocoltest.NewRecorder()
	var ct protocols.CommandTimer
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ct.Start(rec, "AUTH", t0)
	ct.Touch(t0.Add(time.Second))
	ct.Finish(rec, true, t0.Add(2*time.Second))
	ct.Finish(rec, true, t0.Add(3*time.Second)) // nothing running
	ct.Start(rec, "AUTH", t0)
	ct.Touch(t0.Add(time.Second))
	ct.Start(rec, "STARTTLS", t0.Add(5*time.Second)) // reports the AUTH
	ct.Flush(rec)                                    // reports the STARTTLS
	ct.Flush(rec)                                    // nothing running
	ct.Start(rec, "STLS", t0)
	ct.Touch(t0.Add(time.Second))
	if !ct.Running() {
		t.Fatal("STLS not running")
	}
	ct.Confirm(rec) // a success, lasting until the touch
	ct.Confirm(rec) // nothing running
	if ct.Running() {
		t.Fatal("STLS still running after Confirm")
	}
	want := map[string]int{"AUTH ok": 1, "AUTH error": 1, "STARTTLS error": 1, "STLS ok": 1}
	if msg := protocoltest.WantCounts("commands", rec.Commands, want, true)(); msg != "" {
		t.Error(msg)
	}
	if d := rec.Duration("AUTH"); d != 3*time.Second {
		t.Errorf("AUTH took %s in all, want 3s", d)
	}
	if d := rec.Duration("STARTTLS"); d != 0 {
		t.Errorf("STARTTLS took %s, want 0", d)
	}
	if d := rec.Duration("STLS"); d != time.Second {
		t.Errorf("STLS took %s, want 1s", d)
	}
}
