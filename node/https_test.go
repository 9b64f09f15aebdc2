package node

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
)

// httpsClient trusts the node's generated certificate and follows no
// redirects.
func httpsClient(t *testing.T, cfg Config) *http.Client {
	t.Helper()
	return &http.Client{
		Timeout:       30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: clientTLS(t, cfg)},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// apiResult is one answer of the HTTPS listener.
type apiResult struct {
	status int
	header http.Header
	body   string
}

// httpsDo sends a request to the node's HTTPS listener (token "" sends
// no Authorization header; body nil sends none).
func httpsDo(t *testing.T, c *http.Client, n *Node, method, path, token string, body any, header ...string) apiResult {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "https://localhost:"+portOf(t, n, ListenHTTPS)+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return apiResult{resp.StatusCode, resp.Header, string(b)}
}

func portOf(t *testing.T, n *Node, listener string) string {
	t.Helper()
	a := n.Addr(listener)
	if a == nil {
		t.Fatalf("no %s listener", listener)
	}
	s := a.String()
	return s[strings.LastIndexByte(s, ':')+1:]
}

// checkSecurityHeaders checks the headers every /api/ and /admin/ answer
// carries, and that no CORS header is among them.
func checkSecurityHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "frame-ancestors 'none'", "script-src 'self'", "style-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("%s: CSP %q lacks %q", what, csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("%s: CSP allows inline code: %q", what, csp)
	}
	for name, want := range map[string]string{
		"Strict-Transport-Security": "max-age=",
		"X-Content-Type-Options":    "nosniff",
		"Referrer-Policy":           "same-origin",
	} {
		if !strings.Contains(h.Get(name), want) {
			t.Errorf("%s: %s = %q, want %q", what, name, h.Get(name), want)
		}
	}
	for name := range h {
		if strings.HasPrefix(strings.ToLower(name), "access-control-") {
			t.Errorf("%s: CORS header %s set", what, name)
		}
	}
}

// TestAdminAPIOverHTTPS drives the admin API over HTTPS with tokens made
// by the CLI: 401s without a valid token, the CLI's own handler behind
// /api/ (same state, same error codes, same audit log), the paths kept
// off the API, revocation, and the plain HTTP listener keeping out.
func TestAdminAPIOverHTTPS(t *testing.T) {
	cfg := testConfig(t)
	cfg.AuthGuard.MaxFailuresPerIP = 5
	n := startNode(t, cfg)
	dir := cfg.DataDir
	c := httpsClient(t, cfg)

	token := strings.TrimSpace(mustCLI(t, "", "admin", "token", "add", "--data", dir, "ops"))
	if !strings.HasPrefix(token, directory.AdminTokenPrefix) {
		t.Fatalf("token add printed %q", token)
	}
	failCLI(t, ExitError, "exists", "", "admin", "token", "add", "--data", dir, "ops")
	if out := mustCLI(t, "", "admin", "token", "list", "--data", dir); !strings.Contains(out, "ops") || strings.Contains(out, token) {
		t.Errorf("token list:\n%s", out)
	}

	// Without a token, and with a wrong one: 401, with the headers.
	for _, tok := range []string{"", "mct_wrong", token + "x"} {
		res := httpsDo(t, c, n, "GET", "/api/v1/domains", tok, nil)
		if res.status != http.StatusUnauthorized || !strings.HasPrefix(res.header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("token %q: %d %q", tok, res.status, res.body)
		}
		checkSecurityHeaders(t, "401", res.header)
	}

	// The API changes what the CLI sees, and the CLI what the API sees.
	if res := httpsDo(t, c, n, "POST", "/api/v1/domains", token, map[string]string{"name": "example.test"}); res.status != http.StatusNoContent {
		t.Fatalf("add domain: %d %s", res.status, res.body)
	}
	if out := mustCLI(t, "", "domain", "list", "--data", dir); !strings.Contains(out, "example.test") {
		t.Errorf("domain added over HTTPS not listed by the CLI:\n%s", out)
	}
	mustCLI(t, "bob-password\n", "user", "add", "--data", dir, "bob@example.test")
	if res := httpsDo(t, c, n, "POST", "/api/v1/users", token, map[string]string{"address": "ada@example.test", "password": "ada-password"}); res.status != http.StatusNoContent {
		t.Fatalf("add user: %d %s", res.status, res.body)
	}
	res := httpsDo(t, c, n, "GET", "/api/v1/users?domain=example.test", token, nil)
	checkSecurityHeaders(t, "200", res.header)
	var users struct{ Users []string }
	if err := json.Unmarshal([]byte(res.body), &users); err != nil || strings.Join(users.Users, ",") != "ada@example.test,bob@example.test" {
		t.Errorf("users over HTTPS: %d %s", res.status, res.body)
	}
	// Refusals carry the socket's codes.
	res = httpsDo(t, c, n, "POST", "/api/v1/users", token, map[string]string{"address": "ada@example.test", "password": "ada-password"})
	if res.status != http.StatusConflict || !strings.Contains(res.body, `"code":"user_exists"`) {
		t.Errorf("duplicate user: %d %s", res.status, res.body)
	}
	// The handlers the node adds to the socket are there too.
	for _, path := range []string{"/api/v1/status", "/api/v1/cluster", "/api/v1/security/blocked", "/api/v1/audit", "/api/v1/users/ada@example.test/sessions", "/api/v1/aliases", "/api/v1/queue"} {
		if res := httpsDo(t, c, n, "GET", path, token, nil); res.status != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, res.status, res.body)
		}
	}
	if res := httpsDo(t, c, n, "GET", "/api/v1/backup/list", token, nil); res.status != http.StatusConflict || !strings.Contains(res.body, "no backup targets") {
		t.Errorf("backup list without targets: %d %s", res.status, res.body)
	}
	// Kept off the API: tokens, join tokens, the node's files.
	for _, p := range []struct{ method, path string }{
		{"POST", "/api/v1/admin/tokens"}, {"GET", "/api/v1/admin/tokens"}, {"POST", "/api/v1/cluster/tokens"},
		{"POST", "/api/v1/import"}, {"POST", "/api/v1/export"},
	} {
		if res := httpsDo(t, c, n, p.method, p.path, token, map[string]string{"name": "x"}); res.status != http.StatusNotFound {
			t.Errorf("%s %s over HTTPS: %d %s", p.method, p.path, res.status, res.body)
		}
	}

	// Every API action is in the audit log with the token and the
	// client's address; no token or password is.
	out := mustCLI(t, "", "audit", "--data", dir, "--json")
	var entries []directory.AuditEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatal(err)
	}
	var viaAPI int
	for _, e := range entries {
		if e.Who == "token ops" {
			viaAPI++
			if e.Remote != "127.0.0.1" {
				t.Errorf("audit entry %+v: remote %q", e, e.Remote)
			}
		}
	}
	if viaAPI != 3 { // two adds and the refused duplicate
		t.Errorf("%d audit entries by token ops, want 3:\n%s", viaAPI, out)
	}
	if strings.Contains(out, token) || strings.Contains(out, "ada-password") {
		t.Error("the audit log holds a token or a password")
	}

	// The mail ports' TLS settings: TLS 1.2 or newer, AEAD suites only.
	addr := n.Addr(ListenHTTPS).String()
	old := clientTLS(t, cfg)
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if conn, err := tls.Dial("tcp", addr, old); err == nil {
		conn.Close()
		t.Error("HTTPS accepted TLS 1.1")
	}
	cbc := clientTLS(t, cfg)
	cbc.MaxVersion = tls.VersionTLS12
	cbc.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
	if conn, err := tls.Dial("tcp", addr, cbc); err == nil {
		conn.Close()
		t.Error("HTTPS accepted a CBC cipher suite")
	}
	if conn, err := tls.Dial("tcp", addr, clientTLS(t, cfg)); err != nil {
		t.Errorf("HTTPS with the node's certificate: %v", err)
	} else {
		conn.Close()
	}

	// The HTTPS listener serves the HTTP listener's mux too.
	if res := httpsDo(t, c, n, "GET", "/healthz", "", nil); res.status != http.StatusOK || res.body != "ok\n" {
		t.Errorf("/healthz over HTTPS: %d %q", res.status, res.body)
	}
	// Plain HTTP keeps the API and the page out.
	plain := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := plain.Get("http://" + n.Addr(ListenHTTP).String() + "/api/v1/domains")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("API over plain HTTP: %d", resp.StatusCode)
	}
	resp, err = plain.Get("http://" + n.Addr(ListenHTTP).String() + "/admin/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "https://127.0.0.1:" + portOf(t, n, ListenHTTPS) + "/admin/"; resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
		t.Errorf("page over plain HTTP: %d to %q, want a redirect to %s", resp.StatusCode, resp.Header.Get("Location"), want)
	}

	// Revoked: refused from then on.
	mustCLI(t, "", "admin", "token", "revoke", "--data", dir, "ops")
	failCLI(t, ExitError, "no such admin token", "", "admin", "token", "revoke", "--data", dir, "ops")
	if res := httpsDo(t, c, n, "GET", "/api/v1/domains", token, nil); res.status != http.StatusUnauthorized {
		t.Errorf("revoked token: %d %s", res.status, res.body)
	}

	// Wrong tokens count against the address like failed logins: after
	// the limit even a good token is refused.
	good := strings.TrimSpace(mustCLI(t, "", "admin", "token", "add", "--data", dir, "second"))
	for i := 0; i < cfg.AuthGuard.MaxFailuresPerIP; i++ {
		httpsDo(t, c, n, "GET", "/api/v1/domains", "mct_guess", nil)
	}
	if res := httpsDo(t, c, n, "GET", "/api/v1/domains", good, nil); res.status != http.StatusUnauthorized {
		t.Errorf("good token from a locked-out address: %d", res.status)
	}
	if _, body := httpGet(t, n, "/metrics"); metricValue(body, `mail_auth_failures_total{protocol="admin",reason="credentials"}`) < 5 {
		t.Errorf("wrong admin tokens not counted:\n%s", grepLines(body, "mail_auth_failures_total"))
	}
	if out := mustCLI(t, "", "security", "blocked", "--data", dir); !strings.Contains(out, "127.0.0.1") {
		t.Errorf("the locked-out address is not listed:\n%s", out)
	}
}
