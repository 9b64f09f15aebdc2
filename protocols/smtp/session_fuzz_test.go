package smtp

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

// FuzzSession drives whole SMTP sessions over TCP against an MX server
// (its front, DATA as chunks, the session's message checks and delivery
// to the in-memory store) and a submission server (AUTH, go-smtp's own
// reading), after an optional prelude: EHLO, and on submission an AUTH
// as alice. It checks that every session ends once the client has sent
// everything and closed its side, that every reply is a whole line, and
// that the logs hold no panic and no password.
func FuzzSession(f *testing.F) {
	fx := newFixture(f)
	mxLogs, subLogs := &logBuffer{}, &logBuffer{}
	logTo := func(b *logBuffer) *slog.Logger {
		return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	mxCfg := fx.config(ModeMX)
	mxCfg.Logger, mxCfg.Guard = logTo(mxLogs), protocols.NewAuthGuard(protocols.AuthGuardConfig{}, nil)
	mxCfg.MaxMessageBytes = 64 << 10
	mxAddr, _ := fx.start(mxCfg, false)
	subCfg := fx.config(ModeSubmission)
	subCfg.Logger, subCfg.Guard = logTo(subLogs), protocols.NewAuthGuard(protocols.AuthGuardConfig{}, nil)
	subCfg.AllowInsecureAuth = true
	subCfg.MaxMessageBytes = 64 << 10
	subAddr, _ := fx.start(subCfg, false)
	auth := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+alice+"\x00"+alicePW)) + "\r\n"

	msg := "From: " + alice + "\r\nTo: " + bob + "\r\nMessage-ID: <f@example.test>\r\nSubject: fuzzed\r\n\r\nbody\r\n..dot\r\n"
	for _, seed := range []string{
		"MAIL FROM:<" + remote + "> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<" + alice + ">\r\nRCPT TO:<postmaster>\r\nDATA\r\n" + msg + ".\r\nQUIT\r\n",
		"MAIL FROM:<" + remote + ">\r\nRCPT TO:<" + bob + ">\r\nBDAT 10\r\nSubject: xBDAT 0 LAST\r\nRSET\r\n",
		"MAIL FROM:<> SMTPUTF8\r\nRCPT TO:<ålice@example.test>\r\nDATA\r\nSubject: \xff\r\n\r\n\n.\n\r\n.\r\n",
		"MAIL FROM:<" + remote + ">\r\nRCPT TO:<" + alice + "> NOTIFY=NEVER\r\nDATA\r\n" + strings.Repeat("x", 1200) + "\r\n.\r\nNOOP\r\n",
		"STARTTLS\r\n\x16\x03\x01\x00\x02\x01\x00",
		"HELO\r\nEHLO [127.0.0.1]\r\nVRFY alice\r\nEXPN list\r\nHELP\r\nMAIL FROM:<a@b> REQUIRETLS\r\n",
		"MAIL FROM:<" + alice + ">\r\nRCPT TO:<" + remote + ">\r\nDATA\r\n" + msg + ".\r\n",
		"AUTH LOGIN\r\n*\r\nAUTH PLAIN =\r\n",
	} {
		f.Add(true, false, []byte(seed))
		f.Add(true, true, []byte(seed))
	}
	f.Add(false, false, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add(false, true, []byte("\x00\xff\r\n"+strings.Repeat("A", 2000)+"\r\n"))

	f.Fuzz(func(t *testing.T, prelude, submission bool, input []byte) {
		addr, logs := mxAddr, mxLogs
		var script bytes.Buffer
		if prelude {
			script.WriteString("EHLO client.example\r\n")
			if submission {
				script.WriteString(auth)
			}
		}
		if submission {
			addr, logs = subAddr, subLogs
		}
		script.Write(input)
		logs.Reset()
		out, err := protocoltest.Script(t, addr, script.Bytes())
		if !bytes.HasPrefix(out, []byte("220 ")) {
			t.Fatalf("no greeting: %.80q", out)
		}
		// go-smtp refuses a line over its limit as soon as it reads it,
		// before answering the commands pipelined ahead of it.
		if prelude && submission && !bytes.Contains(out, []byte("\r\n235 ")) && !bytes.Contains(out, []byte("Too long line")) {
			t.Fatalf("AUTH not accepted: %.300q", out)
		}
		// Replies are whole lines, unless the session went on in TLS.
		text := out
		if i := bytes.Index(text, []byte(" Ready to start TLS\r\n")); i >= 0 {
			text = text[:i+len(" Ready to start TLS\r\n")]
		}
		if err == nil && !bytes.HasSuffix(text, []byte("\r\n")) {
			t.Fatalf("output ends inside a line: %.80q", text[max(0, len(text)-80):])
		}
		l := logs.String()
		if panics := protocoltest.RecoveredPanics(l); len(panics) > 0 {
			t.Fatalf("the server recovered a panic:\n%s", strings.Join(panics, "\n"))
		}
		// The password reaches the server only inside AUTH, unless the
		// input itself spells it out somewhere else.
		if strings.Contains(l, alicePW) && !bytes.Contains(input, []byte(alicePW)) {
			t.Fatalf("the logs hold the password:\n%s", l)
		}
	})
}
