package node

import (
	"bytes"
	"context"
	"encoding/base64"
	"html"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/mailcluster/mailcluster/node/adminweb"
)

// offsetClock is the real clock moved forward by hand.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

func (c *offsetClock) advance(d time.Duration) { c.off.Add(int64(d)) }

// webRequest sends a request to the page with the session cookie (if
// any) and a form (for POST), plus header name/value pairs.
func webRequest(t *testing.T, c *http.Client, n *Node, method, path string, cookie *http.Cookie, form url.Values, header ...string) apiResult {
	t.Helper()
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	req, err := http.NewRequest(method, "https://localhost:"+portOf(t, n, ListenHTTPS)+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := io.Copy(&b, resp.Body); err != nil {
		t.Fatal(err)
	}
	return apiResult{resp.StatusCode, resp.Header, b.String()}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// webLogin logs in with token and returns the session cookie.
func webLogin(t *testing.T, c *http.Client, n *Node, token string) *http.Cookie {
	t.Helper()
	origin := "https://localhost:" + portOf(t, n, ListenHTTPS)
	res := webRequest(t, c, n, "POST", "/admin/login", nil, url.Values{"token": {token}}, "Origin", origin, "Sec-Fetch-Site", "same-origin")
	if res.status != http.StatusSeeOther || res.header.Get("Location") != "/admin/" {
		t.Fatalf("login: %d %s", res.status, res.body)
	}
	for _, sc := range (&http.Response{Header: res.header}).Cookies() {
		if sc.Name == adminweb.CookieName {
			if !sc.HttpOnly || !sc.Secure || sc.SameSite != http.SameSiteStrictMode || sc.Path != "/" || sc.MaxAge <= 0 || sc.MaxAge > 12*3600 {
				t.Errorf("session cookie %+v: want HttpOnly, Secure, SameSite=Strict, Path=/, expiring within 12h", sc)
			}
			return &http.Cookie{Name: sc.Name, Value: sc.Value}
		}
	}
	t.Fatalf("login set no session cookie: %v", res.header["Set-Cookie"])
	return nil
}

// TestAdminWebSessionsAndCSRF checks the page's login, its headers, the
// CSRF refusals, the forms changing the directory through the API, and
// the ends of a session: logout, idle and absolute timeouts, a revoked
// token.
func TestAdminWebSessionsAndCSRF(t *testing.T) {
	cfg := testConfig(t)
	clock := &offsetClock{}
	n, err := New(cfg, Options{Logger: discardLogger(), Version: "test", Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	dir := cfg.DataDir
	c := httpsClient(t, cfg)
	token := strings.TrimSpace(mustCLI(t, "", "admin", "token", "add", "--data", dir, "web"))
	origin := "https://localhost:" + portOf(t, n, ListenHTTPS)

	// Not logged in: sent to the login page, which has the headers.
	if res := webRequest(t, c, n, "GET", "/admin/users", nil, nil); res.status != http.StatusSeeOther || res.header.Get("Location") != "/admin/login" {
		t.Errorf("page without a session: %d to %q", res.status, res.header.Get("Location"))
	}
	res := webRequest(t, c, n, "GET", "/admin/login", nil, nil)
	checkSecurityHeaders(t, "login page", res.header)
	if res := webRequest(t, c, n, "POST", "/admin/login", nil, url.Values{"token": {"mct_wrong"}}, "Origin", origin); res.status != http.StatusUnauthorized || !strings.Contains(res.body, "not a valid admin token") {
		t.Errorf("wrong token: %d", res.status)
	}
	if res := webRequest(t, c, n, "POST", "/admin/login", nil, url.Values{"token": {token}}, "Origin", "https://evil.example"); res.status != http.StatusForbidden {
		t.Errorf("login from another origin: %d", res.status)
	}

	cookie := webLogin(t, c, n, token)
	res = webRequest(t, c, n, "GET", "/admin/users", cookie, nil)
	checkSecurityHeaders(t, "users page", res.header)
	m := csrfField.FindStringSubmatch(res.body)
	if res.status != http.StatusOK || m == nil {
		t.Fatalf("users page: %d, CSRF field %v", res.status, m)
	}
	csrf := m[1]
	if res := webRequest(t, c, n, "GET", "/admin/static/style.css", nil, nil); res.status != http.StatusOK || !strings.HasPrefix(res.header.Get("Content-Type"), "text/css") {
		t.Errorf("style sheet: %d %q", res.status, res.header.Get("Content-Type"))
	}

	// Forms without the CSRF token, or from another site, change nothing.
	add := url.Values{"name": {"example.test"}, "csrf": {csrf}}
	for _, tc := range []struct {
		name   string
		form   url.Values
		header []string
	}{
		{"no token", url.Values{"name": {"example.test"}}, []string{"Origin", origin}},
		{"wrong token", url.Values{"name": {"example.test"}, "csrf": {csrf + "x"}}, []string{"Origin", origin}},
		{"other origin", add, []string{"Origin", "https://evil.example"}},
		{"cross-site fetch", add, []string{"Sec-Fetch-Site", "cross-site"}},
		{"same-site fetch", add, []string{"Sec-Fetch-Site", "same-site"}},
	} {
		if res := webRequest(t, c, n, "POST", "/admin/domains", cookie, tc.form, tc.header...); res.status != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", tc.name, res.status)
		}
	}
	if doms, _ := n.Directory().Domains(ctx); len(doms) != 0 {
		t.Fatalf("refused forms added %v", doms)
	}

	// The forms work through the API, audited as the token.
	if res := webRequest(t, c, n, "POST", "/admin/domains", cookie, add, "Origin", origin, "Sec-Fetch-Site", "same-origin"); res.status != http.StatusSeeOther {
		t.Fatalf("add domain: %d %s", res.status, res.body)
	}
	user := url.Values{"address": {"ada@example.test"}, "password": {"ada-password"}, "csrf": {csrf}}
	if res := webRequest(t, c, n, "POST", "/admin/users", cookie, user, "Origin", origin); res.status != http.StatusSeeOther {
		t.Fatalf("add user: %d %s", res.status, res.body)
	}
	res = webRequest(t, c, n, "GET", "/admin/users?domain=example.test", cookie, nil)
	if !strings.Contains(res.body, "<td>ada@example.test</td>") || !strings.Contains(res.body, "User ada@example.test added.") {
		t.Errorf("users page after adding:\n%s", res.body)
	}
	if res := webRequest(t, c, n, "POST", "/admin/users", cookie, user, "Origin", origin); res.status != http.StatusSeeOther {
		t.Fatalf("add user twice: %d", res.status)
	}
	if res := webRequest(t, c, n, "GET", "/admin/users", cookie, nil); !strings.Contains(res.body, "User not added") || !strings.Contains(res.body, "exists") {
		t.Errorf("refusal not shown:\n%s", res.body)
	}
	if out := mustCLI(t, "", "audit", "--data", dir); strings.Count(out, "token web (web) from 127.0.0.1") != 3 {
		t.Errorf("audit log lacks the page's three actions:\n%s", out)
	}
	res = webRequest(t, c, n, "GET", "/admin/", cookie, nil)
	for _, want := range []string{`id="nodes"`, `id="shards"`, `id="regions"`, "Messages accepted per minute", "Logins per minute", "no backup targets"} {
		if !strings.Contains(res.body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}

	// Idle for 31 minutes: the session is over.
	clock.advance(31 * time.Minute)
	if res := webRequest(t, c, n, "GET", "/admin/", cookie, nil); res.status != http.StatusSeeOther || res.header.Get("Location") != "/admin/login?expired=1" {
		t.Errorf("idle session: %d to %q", res.status, res.header.Get("Location"))
	}
	// Used every 20 minutes it still ends 12 hours after login.
	cookie = webLogin(t, c, n, token)
	for i := 0; i < 35; i++ {
		clock.advance(20 * time.Minute)
		if res := webRequest(t, c, n, "GET", "/admin/domains", cookie, nil); res.status != http.StatusOK {
			t.Fatalf("session used every 20 minutes ended after %v", time.Duration(i+1)*20*time.Minute)
		}
	}
	clock.advance(21 * time.Minute)
	if res := webRequest(t, c, n, "GET", "/admin/domains", cookie, nil); res.status != http.StatusSeeOther {
		t.Errorf("session older than 12h: %d", res.status)
	}
	// Logout ends it.
	cookie = webLogin(t, c, n, token)
	res = webRequest(t, c, n, "GET", "/admin/domains", cookie, nil)
	csrf = csrfField.FindStringSubmatch(res.body)[1]
	if res := webRequest(t, c, n, "POST", "/admin/logout", cookie, url.Values{"csrf": {csrf}}, "Origin", origin); res.status != http.StatusSeeOther {
		t.Errorf("logout: %d", res.status)
	}
	if res := webRequest(t, c, n, "GET", "/admin/domains", cookie, nil); res.status != http.StatusSeeOther {
		t.Errorf("after logout: %d", res.status)
	}
	// Revoking the token ends its sessions.
	cookie = webLogin(t, c, n, token)
	mustCLI(t, "", "admin", "token", "revoke", "--data", dir, "web")
	if res := webRequest(t, c, n, "GET", "/admin/domains", cookie, nil); res.status != http.StatusSeeOther {
		t.Errorf("session of a revoked token: %d", res.status)
	}
}

// TestAdminWebMFAEnrolment: from the users page an admin enrols a user
// in MFA: the page shows the otpauth URI as a PNG QR code (allowed by
// the CSP as a data: image), the key and the recovery codes, and a code
// from the key confirms it, after which the user's MFA is on.
func TestAdminWebMFAEnrolment(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	dir := cfg.DataDir
	mustCLI(t, "", "domain", "add", "--data", dir, "example.test")
	mustCLI(t, "eve-password-1\n", "user", "add", "--data", dir, "eve@example.test")
	c := httpsClient(t, cfg)
	token := strings.TrimSpace(mustCLI(t, "", "admin", "token", "add", "--data", dir, "web"))
	origin := "https://localhost:" + portOf(t, n, ListenHTTPS)
	cookie := webLogin(t, c, n, token)
	res := webRequest(t, c, n, "GET", "/admin/users?domain=example.test", cookie, nil)
	m := csrfField.FindStringSubmatch(res.body)
	if res.status != http.StatusOK || m == nil || !strings.Contains(res.body, `action="/admin/users/mfa"`) {
		t.Fatalf("users page: %d, no enrol form:\n%s", res.status, res.body)
	}
	csrf := m[1]

	// Without the CSRF token nothing starts.
	if res := webRequest(t, c, n, "POST", "/admin/users/mfa", cookie, url.Values{"address": {"eve@example.test"}}, "Origin", origin); res.status != http.StatusForbidden {
		t.Fatalf("enrolment without CSRF token: %d", res.status)
	}
	res = webRequest(t, c, n, "POST", "/admin/users/mfa", cookie, url.Values{"address": {"eve@example.test"}, "csrf": {csrf}}, "Origin", origin)
	if res.status != http.StatusOK {
		t.Fatalf("enrolment page: %d\n%s", res.status, res.body)
	}
	checkSecurityHeaders(t, "MFA page", res.header)
	if csp := res.header.Get("Content-Security-Policy"); !strings.Contains(csp, "img-src 'self' data:") {
		t.Errorf("CSP %q does not let the QR code show", csp)
	}
	qr := regexp.MustCompile(`id="mfa-qr" src="data:image/png;base64,([^"]+)"`).FindStringSubmatch(res.body)
	if qr == nil {
		t.Fatalf("no QR code on the page:\n%s", res.body)
	}
	// The attribute is HTML-escaped (+ as &#43;), as a browser reads it.
	raw, err := base64.StdEncoding.DecodeString(html.UnescapeString(qr[1]))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("QR code is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 256 || b.Dy() != 256 {
		t.Errorf("QR code is %dx%d", b.Dx(), b.Dy())
	}
	secret := regexp.MustCompile(`<code id="mfa-secret">([A-Z2-7]+)</code>`).FindStringSubmatch(res.body)
	if secret == nil || strings.Count(res.body, "<li><code>") < 5 {
		t.Fatalf("key or recovery codes missing:\n%s", res.body)
	}
	if info, err := n.Directory().User(context.Background(), "eve@example.test"); err != nil || info.MFA != "pending" {
		t.Fatalf("after enrolment: %+v, %v; want pending", info, err)
	}

	// A wrong code leaves it pending; the app's code switches it on.
	res = webRequest(t, c, n, "POST", "/admin/users/mfa/confirm", cookie, url.Values{"address": {"eve@example.test"}, "code": {"000000"}, "csrf": {csrf}}, "Origin", origin)
	if info, _ := n.Directory().User(context.Background(), "eve@example.test"); res.status != http.StatusSeeOther || info.MFA != "pending" {
		t.Fatalf("wrong code: %d, MFA %q", res.status, info.MFA)
	}
	code, err := totp.GenerateCode(secret[1], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	res = webRequest(t, c, n, "POST", "/admin/users/mfa/confirm", cookie, url.Values{"address": {"eve@example.test"}, "code": {code}, "csrf": {csrf}}, "Origin", origin)
	if res.status != http.StatusSeeOther {
		t.Fatalf("confirm: %d", res.status)
	}
	if info, err := n.Directory().User(context.Background(), "eve@example.test"); err != nil || info.MFA != "on" {
		t.Fatalf("after confirming: %+v, %v; want on", info, err)
	}
	res = webRequest(t, c, n, "GET", "/admin/users?domain=example.test", cookie, nil)
	if !strings.Contains(res.body, "MFA is on for eve@example.test") {
		t.Errorf("users page after confirming lacks the notice:\n%s", res.body)
	}
}
