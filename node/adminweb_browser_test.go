package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/chromedp"
	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/cluster/directory"
)

// requireChromium returns the Chromium binary, or skips the test without
// one (fails it when MAILCLUSTER_REQUIRE_CHROMIUM is set, as in CI).
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("MAILCLUSTER_REQUIRE_CHROMIUM") != "" {
		t.Fatal("chromium required (MAILCLUSTER_REQUIRE_CHROMIUM is set): apt-get install chromium")
	}
	t.Skip("chromium not installed (Debian package chromium); set MAILCLUSTER_REQUIRE_CHROMIUM=1 to make this a failure")
	return ""
}

// browserLog collects what the page's browser log says about the
// Content-Security-Policy and any error.
type browserLog struct {
	mu      sync.Mutex
	entries []string
}

func (b *browserLog) listen(ev any) {
	e, ok := ev.(*log.EventEntryAdded)
	if !ok || e.Entry == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entries = append(b.entries, fmt.Sprintf("%s %s: %s (%s)", e.Entry.Level, e.Entry.Source, e.Entry.Text, e.Entry.URL))
}

// violations returns the entries that report a CSP violation.
func (b *browserLog) violations() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, e := range b.entries {
		if strings.Contains(e, "Content Security Policy") {
			out = append(out, e)
		}
	}
	return out
}

// TestAdminWebInBrowser logs in to the web page of a real node in
// headless Chromium with an admin token, adds a domain and a user through
// the forms, sees the user listed, and checks that the browser reported
// no Content-Security-Policy violation. With MAILCLUSTER_SCREENSHOTS=DIR
// it also sends some mail and logins, makes a backup and a drill, and
// writes the status and users pages to DIR as PNG (make screenshots).
func TestAdminWebInBrowser(t *testing.T) {
	chromium := requireChromium(t)
	shots := os.Getenv("MAILCLUSTER_SCREENSHOTS")
	var cfg Config
	if shots != "" {
		cfg, _ = backupNodeConfig(t)
		cfg.AdminWebRateInterval = 500 * time.Millisecond
	} else {
		cfg = testConfig(t)
	}
	cfg.Hostname = "localhost"
	n := startNode(t, cfg)
	dir := cfg.DataDir
	token := strings.TrimSpace(mustCLI(t, "", "admin", "token", "add", "--data", dir, "browser"))
	base := "https://localhost:" + portOf(t, n, ListenHTTPS)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.WindowSize(1280, 900),
		// The node's certificate is self-signed: in this test only.
		chromedp.IgnoreCertErrors,
		chromedp.Flag("disable-gpu", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	var blog browserLog
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithListener(blog.listen))
	defer cancelTab()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	// The login page, then the status page.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/admin/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("shards")),
	); err != nil {
		t.Fatalf("log in: %v (browser log: %q)", err, blog.entries)
	}
	summary, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("node-summary")))
	if err != nil || !strings.Contains(summary, n.cfg.NodeID) || !strings.Contains(summary, "ready") {
		t.Errorf("status page summary %q, %v", summary, err)
	}

	// A domain and a user through the forms.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/admin/domains"),
		chromedp.WaitVisible(chromedp.ID("domain-name")),
		chromedp.SendKeys(chromedp.ID("domain-name"), "example.test"),
		chromedp.Click(chromedp.ID("add-domain-submit")),
		chromedp.WaitVisible(chromedp.ID("flash")),
	); err != nil {
		t.Fatalf("add domain: %v", err)
	}
	if flash, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("flash"))); err != nil || flash != "Domain example.test added." {
		t.Fatalf("after adding the domain: %q, %v", flash, err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/admin/users"),
		chromedp.WaitVisible(chromedp.ID("user-address")),
		chromedp.SendKeys(chromedp.ID("user-address"), "ada@example.test"),
		chromedp.SendKeys(chromedp.ID("user-password"), "ada-password-1"),
		chromedp.Click(chromedp.ID("add-user-submit")),
		chromedp.WaitVisible(chromedp.ID("flash")),
	); err != nil {
		t.Fatalf("add user: %v", err)
	}
	listed, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("users")))
	if err != nil || !strings.Contains(listed, "ada@example.test") {
		t.Fatalf("users listed: %q, %v", listed, err)
	}
	if _, err := n.Directory().User(ctx, "ada@example.test"); err != nil {
		t.Fatalf("the user added in the browser is not in the directory: %v", err)
	}

	if shots != "" {
		writeScreenshots(t, ctx, n, cfg, base, shots)
	}
	if v := blog.violations(); len(v) > 0 {
		t.Errorf("the browser reported CSP violations:\n%s", strings.Join(v, "\n"))
	}

	// The check above sees violations: an inline style put into the page
	// from outside is refused and reported.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { const s = document.createElement("style"); s.textContent = "body{color:red}"; document.head.appendChild(s); return true })()`)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(blog.violations()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // polling the browser's log with a deadline
	}
	if len(blog.violations()) == 0 {
		t.Errorf("an inline style was not reported as a CSP violation: the check cannot see them (log: %q)", blog.entries)
	}
}

// writeScreenshots gives the node some traffic and a backup and drill,
// then writes status.png and users.png into dir.
func writeScreenshots(t *testing.T, ctx context.Context, n *Node, cfg Config, base, dir string) {
	t.Helper()
	d := n.Directory()
	if err := d.AddDomain(ctx, "example.org", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob@example.test", "carol@example.test", "dave@example.org", "erin@example.org"} {
		if err := d.AddUser(ctx, u, "a-password-1"); err != nil {
			t.Fatal(err)
		}
	}
	mustCLI(t, "", "backup", "now", "--data", cfg.DataDir)
	mustCLI(t, "", "backup", "drill", "--data", cfg.DataDir)
	tlsCfg := clientTLS(t, cfg)
	for round := 0; round < 12; round++ {
		sendAndLogin(t, n, tlsCfg, round)
		time.Sleep(cfg.AdminWebRateInterval) // let the sampler see each round
	}
	for _, page := range []struct{ path, wait, file string }{
		{"/admin/", "shards", "admin-status.png"},
		{"/admin/users?domain=example.test", "users", "admin-users.png"},
	} {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+page.path), chromedp.WaitVisible(chromedp.ID(page.wait))); err != nil {
			t.Fatal(err)
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, page.file), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// sendAndLogin delivers a few messages and makes a few IMAP logins (one
// wrong), a varying number each round so the charts have a shape.
func sendAndLogin(t *testing.T, n *Node, tlsCfg *tls.Config, round int) {
	t.Helper()
	c, err := gosmtp.DialStartTLS(n.Addr(ListenSMTP).String(), tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1+(round*7)%5; i++ {
		msg := fmt.Sprintf("From: x@sender.test\r\nTo: bob@example.test\r\nSubject: round %d\r\n\r\nHello.\r\n", round)
		if err := c.SendMail("x@sender.test", []string{"bob@example.test"}, strings.NewReader(msg)); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	c.Quit()
	for i := 0; i < 1+(round*3)%4; i++ {
		ic, err := imapclient.DialTLS(n.Addr(ListenIMAPS).String(), &imapclient.Options{TLSConfig: tlsCfg})
		if err != nil {
			t.Fatal(err)
		}
		pw := "a-password-1"
		if i == 0 && round%3 == 0 {
			pw = "wrong"
		}
		_ = ic.Login("carol@example.test", pw).Wait()
		ic.Close()
	}
}
