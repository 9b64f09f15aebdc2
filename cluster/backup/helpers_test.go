package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/backup/backuptest"
	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

const canary = "CANARY-7f3e9b2d-backup-plaintext"

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// node is a real single-node cluster in a temp dir with a backup key.
type node struct {
	dir      string
	master   [seal.KeySize]byte
	c        *testCluster
	identity *Identity
}

// testCluster is a one-node cluster (package clustertest) as backups and
// these tests use it.
type testCluster struct {
	n *clustertest.Node
}

func (c *testCluster) BackupShards() []uint32 { return c.n.Cluster().BackupShards() }
func (c *testCluster) WriteShardState(ctx context.Context, n uint32, w io.Writer) (raftstore.StateInfo, error) {
	return c.n.Cluster().WriteShardState(ctx, n, w)
}
func (c *testCluster) ClusterID(ctx context.Context) (string, error) {
	return c.n.Directory().ClusterID(ctx)
}
func (c *testCluster) BackupRecipient(ctx context.Context) (string, error) {
	return c.n.Directory().BackupRecipient(ctx)
}
func (c *testCluster) BackupManifestKey() [32]byte { return c.n.Directory().BackupManifestKey() }
func (c *testCluster) SetBackupRecipient(ctx context.Context, r string) error {
	return c.n.Directory().SetBackupRecipient(ctx, r)
}
func (c *testCluster) Close() error { c.n.Stop(); return nil }
func (c *testCluster) Authenticate(ctx context.Context, user, password string) (protocols.Account, error) {
	return c.n.Store().Authenticate(ctx, schema.Credentials{Username: user, Password: password})
}

func openCluster(t testing.TB, dir string, master [seal.KeySize]byte) *testCluster {
	t.Helper()
	tc := clustertest.Start(t, clustertest.Options{Nodes: 1, MailShards: 2, FirstDir: dir, FirstKey: &master})
	n := tc.Nodes[0]
	// The directory must be able to open the cluster data key before use.
	tc.Eventually(30*time.Second, "directory ready", func() error { return n.Directory().Init(testCtx(t)) })
	return &testCluster{n: n}
}

func newNode(t testing.TB) *node {
	t.Helper()
	n := &node{dir: t.TempDir(), master: seal.NewKey(0).Secret}
	n.c = openCluster(t, n.dir, n.master)
	id, rcpt, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.c.SetBackupRecipient(testCtx(t), rcpt); err != nil {
		t.Fatal(err)
	}
	n.identity = id
	return n
}

func (n *node) addUser(t testing.TB, address string) {
	t.Helper()
	ctx := testCtx(t)
	domain := address[strings.IndexByte(address, '@')+1:]
	d := n.c.n.Directory()
	if err := d.AddDomain(ctx, domain, directory.KeyModeUser, ""); err != nil && !errors.Is(err, schema.ErrDomainExists) {
		t.Fatal(err)
	}
	if err := d.AddUser(ctx, address, "password-"+address); err != nil {
		t.Fatal(err)
	}
}

func (n *node) login(t testing.TB, c *testCluster, address string) protocols.Account {
	t.Helper()
	a, err := c.n.Store().Authenticate(testCtx(t), schema.Credentials{Username: address, Password: "password-" + address})
	if err != nil {
		t.Fatalf("login %s: %v", address, err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func (n *node) deliver(t testing.TB, to, subject, body string) {
	t.Helper()
	msg := "From: Sender <sender@remote.test>\r\nTo: " + to + "\r\nSubject: " + subject + "\r\n\r\n" + body + "\r\n"
	if err := n.c.n.Store().Deliver(testCtx(t), schema.Delivery{From: "sender@remote.test", Recipients: []string{to}, Message: []byte(msg)}); err != nil {
		t.Fatal(err)
	}
}

// mailState is everything a user can see, for comparing before and after
// a restore.
type mailState map[string]mailboxState

type mailboxState struct {
	Info     schema.MailboxInfo
	Messages []messageState
}

type messageState struct {
	UID   schema.UID
	Flags []string
	Date  time.Time
	Size  uint64
	Body  string
}

func readState(t testing.TB, a protocols.Account) mailState {
	t.Helper()
	ctx := testCtx(t)
	boxes, err := a.Mailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := mailState{}
	for _, mb := range boxes {
		snap, err := a.Snapshot(ctx, mb.ID)
		if err != nil {
			t.Fatal(err)
		}
		ms := mailboxState{Info: snap.Mailbox}
		for _, m := range snap.Messages {
			body, err := a.Body(ctx, m.Blob)
			if err != nil {
				t.Fatal(err)
			}
			flags := slices.Clone(m.Flags)
			sort.Strings(flags)
			ms.Messages = append(ms.Messages, messageState{UID: m.UID, Flags: flags, Date: m.InternalDate.UTC(), Size: m.Size, Body: string(body)})
		}
		st[mb.Name] = ms
	}
	return st
}

func fileTargets(t testing.TB, regions ...string) []Target {
	t.Helper()
	var out []Target
	for _, r := range regions {
		tg, err := OpenTarget(TargetConfig{Region: r, URL: "file://" + filepath.Join(t.TempDir(), r)})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tg)
	}
	return out
}

func newRunner(t testing.TB, cfg Config) *Runner {
	t.Helper()
	if cfg.TempDir == "" {
		cfg.TempDir = t.TempDir()
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "n1"
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// s3Server is a versitygw process serving one bucket on loopback.
type s3Server struct{ *backuptest.S3 }

func startS3(t testing.TB) s3Server { return s3Server{backuptest.StartS3(t)} }

func (s s3Server) config(region, prefix string) TargetConfig {
	return TargetConfig{Region: region, URL: "s3://" + s.Bucket + "/" + prefix, Endpoint: s.Endpoint,
		S3Region: "us-east-1", AccessKey: backuptest.AccessKey, SecretKey: backuptest.SecretKey, Insecure: true, PathStyle: true}
}

func (s s3Server) target(t testing.TB, region, prefix string) Target {
	t.Helper()
	tg, err := OpenTarget(s.config(region, prefix))
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// fakeClock is a Clock driven by the test.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{now: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), ch: ch})
	return ch
}

// Set moves the clock to t and fires the timers that are due.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(t) {
			w.ch <- t
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

func (c *fakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not a wait for an event
	}
}

// scanFor fails the test if needle occurs in any file under root.
func scanFor(t testing.TB, root string, needle []byte) int {
	t.Helper()
	files := 0
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if info.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, needle) {
			t.Errorf("plaintext canary found in %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func randomText(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	var s strings.Builder
	for i, c := range b {
		s.WriteByte("abcdefghijklmnopqrstuvwxyz      "[c%32])
		if i%70 == 69 {
			s.WriteString("\r\n")
		}
	}
	return s.String()
}

// failingTarget wraps a target and fails Put after limit bytes of a key
// matching match, like a target that becomes unreachable mid-upload.
type failingTarget struct {
	Target
	match string
	limit int64
	mu    sync.Mutex
	fail  bool
}

func (f *failingTarget) setFail(v bool) {
	f.mu.Lock()
	f.fail = v
	f.mu.Unlock()
}

func (f *failingTarget) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	f.mu.Lock()
	fail := f.fail && strings.Contains(key, f.match)
	f.mu.Unlock()
	if fail {
		r = &brokenReader{r: r, left: f.limit}
	}
	return f.Target.Put(ctx, key, r, size)
}

type brokenReader struct {
	r    io.Reader
	left int64
}

func (b *brokenReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errors.New("connection reset by peer (injected)")
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

func itoa(n int) string { return strconv.Itoa(n) }
