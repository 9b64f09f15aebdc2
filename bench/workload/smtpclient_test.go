package workload

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// dotWriterOutput is what textproto's DotWriter writes for data.
func dotWriterOutput(t testing.TB, data []byte) []byte {
	var b bytes.Buffer
	w := textproto.NewWriter(bufio.NewWriter(&b))
	dw := w.DotWriter()
	if _, err := dw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// writeDataOutput is what writeData writes for data.
func writeDataOutput(t testing.TB, data []byte) []byte {
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	if err := writeData(bw, data); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestWriteDataIsDotWriter checks writeData against textproto's
// DotWriter on mail as the corpus has it and on lines made of dots, CRs
// and LFs in every order.
func TestWriteDataIsDotWriter(t *testing.T) {
	cases := []string{
		"", ".", "\r", "\n", "\r\n", "\r\r\n", "\r\r\r\n", "a\r", "a\r\r", "..\r\n.\r\n",
		"Subject: x\r\n\r\nbody\r\n.\r\n..two\r\n",
		"bare\nlf\n.dot\nend",
		strings.Repeat("line of text\r\n", 1000),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = ".\r\na"[rng.IntN(4)]
		}
		cases = append(cases, string(b))
	}
	for _, c := range cases {
		want := dotWriterOutput(t, []byte(c))
		if got := writeDataOutput(t, []byte(c)); !bytes.Equal(got, want) {
			t.Fatalf("writeData(%q) = %q, DotWriter writes %q", c, got, want)
		}
	}
}

// FuzzWriteData checks writeData against textproto's DotWriter.
func FuzzWriteData(f *testing.F) {
	f.Add([]byte("a\r\n.b\r\r\n\n."))
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := writeDataOutput(t, data), dotWriterOutput(t, data); !bytes.Equal(got, want) {
			t.Fatalf("writeData(%q) = %q, DotWriter writes %q", data, got, want)
		}
	})
}

// TestEnvelopePipelining: with pipelining on and PIPELINING offered, the
// client sends MAIL, RCPT and DATA before it reads a reply, and a refused
// MAIL fails the transaction with the client still in step (the RSET
// that follows gets its own reply); with pipelining off, or not offered,
// it waits for each reply.
func TestEnvelopePipelining(t *testing.T) {
	for _, tc := range []struct {
		name               string
		pipelining, offers bool
		replies            []string
		wantErr            string
	}{
		{"pipelined", true, true, []string{"250 ok", "250 ok", "354 go"}, ""},
		{"pipelined, MAIL refused", true, true, []string{"550 5.7.1 no", "503 5.5.1 no MAIL", "503 5.5.1 no RCPT"}, "mail from: SMTP error 550"},
		{"one at a time", false, true, []string{"250 ok", "250 ok", "354 go"}, ""},
		{"not offered", true, false, []string{"250 ok", "250 ok", "354 go"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			c := &smtpClient{conn: client, text: textproto.NewConn(client), ext: map[string]bool{"PIPELINING": tc.offers}, pipelining: tc.pipelining}
			grouped := tc.pipelining && tc.offers
			done := make(chan error, 1)
			go func() {
				done <- func() error {
					r := textproto.NewReader(bufio.NewReader(server))
					var lines []string
					for i, reply := range tc.replies {
						if !grouped || i == 0 {
							// Read what the client sends before it
							// waits: the whole group, or one command.
							n := 1
							if grouped {
								n = len(tc.replies)
							}
							server.SetReadDeadline(time.Now().Add(5 * time.Second))
							for range n {
								l, err := r.ReadLine()
								if err != nil {
									return fmt.Errorf("reading the client's commands before replying: %w", err)
								}
								lines = append(lines, l)
							}
						}
						if _, err := fmt.Fprintf(server, "%s\r\n", reply); err != nil {
							return err
						}
					}
					if want := "MAIL FROM:<a@b.test> SIZE=9|RCPT TO:<c@d.test>|DATA"; strings.Join(lines, "|") != want {
						return fmt.Errorf("client sent %q, want %q", strings.Join(lines, "|"), want)
					}
					if tc.wantErr != "" {
						if l, err := r.ReadLine(); err != nil || l != "RSET" {
							return fmt.Errorf("after the refusal the client sent %q, %v", l, err)
						}
						_, err := fmt.Fprintf(server, "250 reset\r\n")
						return err
					}
					return nil
				}()
			}()
			err := c.envelope("a@b.test", " SIZE=9", "c@d.test")
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("envelope: %v, want %q", err, tc.wantErr)
			}
			if tc.wantErr != "" {
				if err := c.Reset(); err != nil {
					t.Fatalf("RSET after the refused group: %v", err)
				}
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}
