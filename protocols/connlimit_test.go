package protocols

import (
	"net"
	"testing"
	"time"
)

func TestConnLimiterReportsTheLimit(t *testing.T) {
	tests := []struct {
		name       string
		max, perIP int
		want       Refusal
	}{
		{"total", 1, 5, RefusedMaxConnections},
		{"per address", 5, 1, RefusedMaxPerIP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			refused := make(chan Refusal, 1)
			ln := NewConnLimiter(tt.max, tt.perIP).ListenerWithReason(raw, func(_ net.Conn, why Refusal) { refused <- why })
			done := make(chan struct{})
			go func() {
				defer close(done)
				var held []net.Conn
				defer func() {
					for _, c := range held {
						c.Close()
					}
				}()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					held = append(held, c)
				}
			}()
			defer func() {
				ln.Close()
				<-done
			}()
			for range 2 {
				c, err := net.Dial("tcp", raw.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
			}
			select {
			case got := <-refused:
				if got != tt.want {
					t.Fatalf("refused for %q, want %q", got, tt.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("second connection not refused")
			}
		})
	}
}
