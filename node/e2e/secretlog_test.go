package e2e

import (
	"bytes"
	"context"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// cliRun is one admin command whose output the secret scan reads.
type cliRun struct {
	name           string
	stdout, stderr []byte
	// printsSecret marks a command whose standard output must print a
	// secret once (app-password add, mfa enable, cluster token): only its
	// standard error is scanned.
	printsSecret bool
}

// cliCapture runs one admin command against n and returns both outputs.
func cliCapture(n *node, stdin string, args ...string) (stdout, stderr []byte, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	full := append(append([]string{}, args...), "--data", n.data)
	cmd := exec.CommandContext(ctx, n.bin, full...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.Bytes(), e.Bytes(), err
}

// TestSecretsNeverLogged runs one node at debug level and hands it every
// kind of secret through every path that takes one: the account password
// and a wrong one over IMAP LOGIN and AUTHENTICATE PLAIN, POP3 USER/PASS
// and AUTH PLAIN, SMTP submission AUTH PLAIN and AUTH LOGIN (success and
// failure); an app password (created by the CLI, used over IMAP and
// SMTP); an MFA enrolment (TOTP secret, recovery codes, a wrong and a
// right TOTP code, a recovery code spent on mfa disable); a bootstrap
// token and a join token; an IMAP import's source password (right and
// wrong); the password again by user passwd; and a message whose body
// holds a canary. Then no form of any of them (clear in any case,
// base64 at every alignment) may appear in any file of the node's
// directory (its log, config and data directory) nor on the standard
// error of any command, nor on the standard output of the commands that
// are not meant to print a secret.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	const (
		user = "secrets@" + testDomain
		src  = "import-source@" + testDomain
	)
	secrets := map[string]string{
		"password":               "pw" + randomHex(12),
		"wrong password":         "wr" + randomHex(12),
		"import source password": "is" + randomHex(12),
		"wrong import password":  "wi" + randomHex(12),
		"bootstrap token":        "bt" + randomHex(16),
		"body canary":            "bodycnry" + randomHex(12),
	}
	password, wrong := secrets["password"], secrets["wrong password"]

	n := startNode(t, nodeOptions{logLevel: "debug", firstArgs: []string{"--bootstrap-token", secrets["bootstrap token"]}})
	var runs []cliRun
	cli := func(printsSecret bool, stdin string, args ...string) (string, error) {
		t.Helper()
		o, e, err := cliCapture(n, stdin, args...)
		runs = append(runs, cliRun{name: strings.Join(args[:min(3, len(args))], "-"), stdout: o, stderr: e, printsSecret: printsSecret})
		if err != nil {
			return string(o), fmt.Errorf("mailnode %s: %w: %s", args[0], err, bytes.TrimSpace(e))
		}
		return string(o), nil
	}
	must := func(printsSecret bool, stdin string, args ...string) string {
		t.Helper()
		out, err := cli(printsSecret, stdin, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	must(false, "", "domain", "add", testDomain)
	must(false, password+"\n", "user", "add", user)
	must(false, secrets["import source password"]+"\n", "user", "add", src)

	// IMAP: AUTHENTICATE PLAIN and LOGIN, each right and wrong.
	c := imapDialTLS(t, n, user, password, nil)
	c.Logout()
	c.Close()
	c = imapDialStartTLS(t, n, user, password, nil)
	c.Logout()
	c.Close()
	imapAuthFails := func(what, pass string) {
		t.Helper()
		c, err := imapclient.DialTLS(n.addr("imaps"), &imapclient.Options{TLSConfig: n.clientTLS})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Authenticate(sasl.NewPlainClient("", user, pass)); err == nil {
			t.Errorf("IMAP AUTHENTICATE PLAIN with the %s succeeded", what)
		}
		if err := c.Login(user, pass).Wait(); err == nil {
			t.Errorf("IMAP LOGIN with the %s succeeded", what)
		}
	}
	imapAuthFails("wrong password", wrong)

	// POP3: USER/PASS and AUTH PLAIN, right and wrong.
	pop3Run(t, n, "implicit", step("user", user), step("pass", password), step("quit")).mustOK(t)
	pop3Run(t, n, "stls", step("stls"), step("auth_plain", user, password), step("quit")).mustOK(t)
	if s := pop3Run(t, n, "implicit", step("user", user), step("pass", wrong)); s.Results[1].OK {
		t.Error("POP3 PASS with the wrong password succeeded")
	}
	if s := pop3Run(t, n, "stls", step("stls"), step("auth_plain", user, wrong)); s.Results[1].OK {
		t.Error("POP3 AUTH PLAIN with the wrong password succeeded")
	}

	// SMTP submission: AUTH PLAIN and AUTH LOGIN, right and wrong.
	smtpAuth := func(auth sasl.Client) error {
		t.Helper()
		sc, err := gosmtp.DialTLS(n.addr("submissions"), n.clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		return sc.Auth(auth)
	}
	for _, pw := range []string{password, wrong} {
		for mech, auth := range map[string]sasl.Client{"PLAIN": sasl.NewPlainClient("", user, pw), "LOGIN": sasl.NewLoginClient(user, pw)} {
			if err := smtpAuth(auth); (err == nil) != (pw == password) {
				t.Errorf("SMTP AUTH %s with the right password %t: %v", mech, pw == password, err)
			}
		}
	}

	// An app password: printed once, then used over IMAP and SMTP.
	out := must(true, "", "user", "app-password", "add", "--name", "phone", user)
	secrets["app password"] = strings.TrimSpace(out)
	if len(secrets["app password"]) < 12 || strings.ContainsAny(secrets["app password"], " \n") {
		t.Fatalf("app-password add printed %d bytes, not one password", len(out))
	}
	c = imapDialTLS(t, n, user, secrets["app password"], nil)
	c.Logout()
	c.Close()
	c = imapDialStartTLS(t, n, user, secrets["app password"], nil)
	c.Logout()
	c.Close()
	if err := smtpAuth(sasl.NewLoginClient(user, secrets["app password"])); err != nil {
		t.Errorf("SMTP AUTH LOGIN with the app password: %v", err)
	}

	// MFA enrolment: the TOTP secret and recovery codes, a wrong and a
	// right code, then the account password is refused and the app
	// password taken; a recovery code turns MFA off again.
	out = must(true, "", "user", "mfa", "enable", user)
	lines := strings.Split(out, "\n")
	key, err := otp.NewKeyFromURL(strings.TrimSpace(lines[0]))
	if err != nil {
		t.Fatalf("mfa enable: first line is not an otpauth URI: %v", err)
	}
	secrets["TOTP secret"] = key.Secret()
	var recovery []string
	for _, l := range lines {
		if strings.HasPrefix(l, "  ") && strings.TrimSpace(l) != "" {
			recovery = append(recovery, strings.TrimSpace(l))
		}
	}
	if len(recovery) == 0 || key.Secret() == "" {
		t.Fatalf("mfa enable printed %d recovery codes and a secret of %d characters", len(recovery), len(key.Secret()))
	}
	for i, r := range recovery {
		secrets[fmt.Sprintf("recovery code %d", i+1)] = r
	}
	code, err := totp.GenerateCode(key.Secret(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	codeNum, err := strconv.Atoi(code)
	if err != nil {
		t.Fatalf("totp code %q: %v", code, err)
	}
	wrongCode := fmt.Sprintf("%06d", (codeNum+500000)%1000000)
	if _, err := cli(false, "", "user", "mfa", "confirm", user, wrongCode); err == nil {
		t.Error("mfa confirm took a wrong code")
	}
	must(false, "", "user", "mfa", "confirm", user, code)
	// Six digits are too short to search for without false hits; the
	// code is still used, and the log is scanned for the secret it
	// comes from.
	imapAuthFails("account password with MFA on", password)
	c = imapDialTLS(t, n, user, secrets["app password"], nil)
	c.Logout()
	c.Close()
	if _, err := cli(false, "", "user", "mfa", "disable", "--recovery", "aaaaa-aaaaa", user); err == nil {
		t.Error("mfa disable took a made-up recovery code")
	}
	must(false, "", "user", "mfa", "disable", "--recovery", recovery[0], user)

	// A join token, printed once.
	out = must(true, "", "cluster", "token")
	for _, f := range strings.Fields(out) {
		if len(f) > len(secrets["join token"]) {
			secrets["join token"] = f
		}
	}
	if len(secrets["join token"]) < 16 {
		t.Fatalf("cluster token printed no token (%d bytes)", len(out))
	}

	// An admin token, printed once, used over the HTTPS admin API, and a
	// wrong one refused there.
	out = must(true, "", "admin", "token", "add", "secrets-ops")
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "mct_") {
			secrets["admin token"] = f
		}
	}
	if secrets["admin token"] == "" {
		t.Fatalf("admin token add printed no token (%d bytes)", len(out))
	}
	secrets["wrong admin token"] = "mct_" + randomHex(20)
	api := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: n.clientTLS}}
	apiGet := func(token string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "https://"+n.addr("https")+"/api/v1/users?domain="+testDomain, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := api.Do(req)
		if err != nil {
			t.Fatalf("admin API: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := apiGet(secrets["admin token"]); code != http.StatusOK {
		t.Errorf("admin API with the token: %d", code)
	}
	if code := apiGet(secrets["wrong admin token"]); code != http.StatusUnauthorized {
		t.Errorf("admin API with a wrong token: %d, want 401", code)
	}

	// An IMAP import from the node itself: the source password right,
	// then wrong.
	pwDir := t.TempDir() // outside the node's directory: it holds secrets on purpose
	_, port, err := net.SplitHostPort(n.addr("imaps"))
	if err != nil {
		t.Fatal(err)
	}
	importWith := func(secret string) error {
		f := filepath.Join(pwDir, strings.ReplaceAll(secret, " ", "-"))
		if err := os.WriteFile(f, []byte(secrets[secret]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := cli(false, "", "import", "imap", "--from", "imaps://localhost:"+port, "--user", src,
			"--password-file", f, "--ca-file", filepath.Join(n.data, "tls", "cert.pem"), "--to", user+"/Imported")
		return err
	}
	if err := importWith("import source password"); err != nil {
		t.Errorf("import with the source password: %v", err)
	}
	if err := importWith("wrong import password"); err == nil {
		t.Error("import with a wrong source password succeeded")
	}

	// The password through the admin socket once more, and a message
	// whose body holds the canary, read back.
	must(false, password+"\n", "user", "passwd", user)
	smtpSend(t, n, "sender@canary-sender.example", []string{user}, simpleMessage("sender@canary-sender.example", user, "plain subject", "the body says "+secrets["body canary"]+"\n"))
	c = imapDialTLS(t, n, user, password, nil)
	selectBox(t, c, "INBOX", true)
	var body string
	for _, m := range fetchAll(t, c, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}) {
		for _, b := range m.BodySection {
			body += string(b.Bytes)
		}
	}
	if !strings.Contains(body, secrets["body canary"]) {
		t.Error("the body canary did not come back over IMAP")
	}
	c.Logout()
	c.Close()

	// What the node recorded about these logins and admin actions.
	must(false, "", "user", "sessions", "--json", user)
	must(false, "", "audit", "--json")

	if err := n.stop(); err != nil {
		t.Fatal(err)
	}

	var forms []secretForm
	for name, s := range secrets {
		forms = append(forms, secretForms(name, s)...)
	}
	// The TOTP key's raw bytes in base64 and hex (not in clear: they are
	// binary).
	if raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(strings.TrimRight(key.Secret(), "="))); err == nil {
		forms = append(forms, secretForms("TOTP key bytes", string(raw))[1:]...)
		forms = append(forms, secretForm{name: "TOTP key bytes (hex)", pattern: []byte(hex.EncodeToString(raw)), fold: true})
	} else {
		t.Errorf("TOTP secret is not base32: %v", err)
	}

	// The scan must be able to fail: a file holding every form is hit by
	// every form.
	planted := filepath.Join(t.TempDir(), "planted")
	var all []byte
	for _, f := range forms {
		all = append(append(all, f.pattern...), '\n')
	}
	if err := os.WriteFile(planted, all, 0o600); err != nil {
		t.Fatal(err)
	}
	hits, _, err := scanFile(planted, forms)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, h := range hits {
		found[h.form] = true
	}
	for _, f := range forms {
		if !found[f.name] {
			t.Fatalf("self-check: %s planted but not found", f.name)
		}
	}

	log := n.logBytes(t)
	if !bytes.Contains(log, []byte(`"level":"DEBUG"`)) {
		t.Fatal("the node did not log at debug level; the scan would prove little")
	}
	hits, files, total, err := scanTree(n.dir, forms)
	if err != nil {
		t.Fatal(err)
	}
	cliDir := t.TempDir()
	for i, r := range runs {
		outs := map[string][]byte{"stderr": r.stderr}
		if !r.printsSecret {
			outs["stdout"] = r.stdout
		}
		for kind, b := range outs {
			p := filepath.Join(cliDir, fmt.Sprintf("%02d-%s.%s", i, r.name, kind))
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			h, _, err := scanFile(p, forms)
			if err != nil {
				t.Fatal(err)
			}
			hits = append(hits, h...)
		}
	}
	t.Logf("secret scan: %d secrets in %d forms, %d files and %d bytes under the node's directory (log %d bytes), %d commands", len(secrets), len(forms), len(files), total, len(log), len(runs))
	for _, h := range hits {
		t.Errorf("secret found: %s", h)
	}
}
