package bench

import (
	"context"
	"encoding/base64"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/mailstore"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/imap"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// benchWords is the vocabulary of the generated mailbox.
var benchWords = strings.Fields(`meeting report invoice budget quarter travel
	project review draft schedule deadline offer contract release update
	question answer holiday weekend lunch dinner coffee train flight hotel
	garden kitchen window bicycle museum concert theatre library river`)

// benchMessage builds message i of the generated mailbox: one of 50
// senders, a subject and a body of vocabulary words, every fifth message
// multipart with a base64 text part, every seventh with a
// quoted-printable body; body word "needle<i%100>" lets a search find
// one message in a hundred.
func benchMessage(r *rand.Rand, i int) []byte {
	words := func(n int) string {
		w := make([]string, n)
		for k := range w {
			w[k] = benchWords[r.IntN(len(benchWords))]
		}
		return strings.Join(w, " ")
	}
	date := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.IntN(365*24*3600)) * time.Second)
	var b strings.Builder
	fmt.Fprintf(&b, "From: Sender %d <sender%d@example.org>\r\n", i%50, i%50)
	b.WriteString("To: user@example.com\r\n")
	fmt.Fprintf(&b, "Subject: %s %d\r\n", words(5), i)
	fmt.Fprintf(&b, "Date: %s\r\n", date.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <m%d@example.org>\r\nMIME-Version: 1.0\r\n", i)
	body := ""
	for k := 0; k < 20; k++ {
		body += words(12) + "\r\n"
	}
	body += fmt.Sprintf("needle%d\r\n", i%100)
	switch {
	case i%5 == 0:
		b.WriteString("Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n")
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n")
		enc := []byte(body)
		b.WriteString(base64Lines(enc))
		b.WriteString("\r\n--b1\r\nContent-Type: application/octet-stream\r\n\r\nAAAA\r\n--b1--\r\n")
	case i%7 == 0:
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
		b.WriteString(strings.ReplaceAll(body, "e", "=65"))
	default:
		b.WriteString("Content-Type: text/plain\r\n\r\n")
		b.WriteString(body)
	}
	return []byte(b.String())
}

// benchCount is the size of the generated mailbox:
// MAILCLUSTER_BENCH_MESSAGES, 20,000 unless set.
func benchCount(b *testing.B) int {
	n := 20000
	if v := os.Getenv("MAILCLUSTER_BENCH_MESSAGES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("MAILCLUSTER_BENCH_MESSAGES=%q: want a positive count", v)
		}
	}
	return n
}

// BenchmarkSearchLargeMailbox measures SEARCH on header and body keys and
// SORT (DATE) over one INBOX of benchCount messages, stored sealed in a
// single-node cluster (real Raft, bbolt, mail store) and searched through
// the IMAP server by the go-imap client. Not run by the test suite (it
// is a benchmark); docs/architecture.md ("Search records") has figures. MAILCLUSTER_BENCH_SEARCH picks
// what helps: "read" stores no search records and caches none (every
// search opens every message it needs, as before records existed),
// "records" stores them but caches none, anything else (the default)
// both.
func BenchmarkSearchLargeMailbox(b *testing.B) {
	n := benchCount(b)
	mode := os.Getenv("MAILCLUSTER_BENCH_SEARCH")
	indexer, cacheBytes := imap.BuildSearchRecord, int64(0)
	switch mode {
	case "read":
		indexer, cacheBytes = nil, -1
	case "records":
		cacheBytes = -1
	}
	if v := os.Getenv("MAILCLUSTER_BENCH_CACHE_MB"); v != "" && cacheBytes == 0 {
		mb, err := strconv.Atoi(v)
		if err != nil || mb <= 0 {
			b.Fatalf("MAILCLUSTER_BENCH_CACHE_MB=%q: want a positive count", v)
		}
		cacheBytes = int64(mb) << 20
	}
	c := clustertest.Start(b, clustertest.Options{Nodes: 1, MailShards: 1, Replicas: 1, SearchIndexer: indexer})
	const user, pass = "big@example.com", "big-password-1"
	c.AddUser(user, pass)
	node := c.Nodes[0]
	acct := node.Login(user, pass)
	ctx := context.Background()
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	const batch = 200
	for i := 0; i < n; i += batch {
		var msgs []schema.AppendMessage
		for k := i; k < min(i+batch, n); k++ {
			msgs = append(msgs, schema.AppendMessage{Message: benchMessage(r, k), Date: time.Unix(int64(1700000000+k), 0)})
		}
		if _, err := acct.AppendBatch(ctx, inbox.ID, msgs); err != nil {
			b.Fatalf("append: %v", err)
		}
	}
	b.Logf("stored %d messages in %v", n, time.Since(start).Round(time.Millisecond))
	if err := node.Cluster().Compact(ctx); err != nil {
		b.Fatal(err)
	}
	var disk int64
	_ = filepath.WalkDir(node.Dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".db") {
			if fi, err := d.Info(); err == nil {
				disk += fi.Size()
			}
		}
		return nil
	})
	b.Logf("data directory: %d MiB in bbolt files after compaction", disk>>20)

	srv, err := imap.NewServer(imap.Config{Hostname: "bench", AllowInsecureAuth: true, Logger: slog.New(slog.DiscardHandler), SearchCacheBytes: cacheBytes,
		Guard: protocols.NewAuthGuard(protocols.AuthGuardConfig{MaxFailuresPerIP: 1000, MaxFailuresPerUser: 1000, Window: time.Minute, Lockout: time.Minute}, nil),
	}, protocols.StoreOf[*mailstore.Account](node.Store()))
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	cl, err := imapclient.DialInsecure(ln.Addr().String(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Login(user, pass).Wait(); err != nil {
		b.Fatal(err)
	}
	if _, err := cl.Select("INBOX", nil).Wait(); err != nil {
		b.Fatal(err)
	}
	// Each sub-benchmark reports its first run apart (first-ms): with
	// the cache, it is the one that reads the records.
	timed := func(b *testing.B, run func(b *testing.B)) {
		start := time.Now()
		run(b)
		first := time.Since(start)
		for b.Loop() {
			run(b)
		}
		b.ReportMetric(float64(first.Microseconds())/1000, "first-ms")
	}
	search := func(b *testing.B, crit *goimap.SearchCriteria, want int) {
		timed(b, func(b *testing.B) {
			data, err := cl.UIDSearch(crit, nil).Wait()
			if err != nil {
				b.Fatal(err)
			}
			if got := len(data.AllUIDs()); want >= 0 && got != want {
				b.Fatalf("found %d, want %d", got, want)
			}
		})
	}
	b.Run("body", func(b *testing.B) {
		search(b, &goimap.SearchCriteria{Body: []string{"needle42"}}, (n+57)/100)
	})
	b.Run("subject", func(b *testing.B) {
		search(b, &goimap.SearchCriteria{Header: []goimap.SearchCriteriaHeaderField{{Key: "Subject", Value: "garden"}}}, -1)
	})
	b.Run("from", func(b *testing.B) {
		search(b, &goimap.SearchCriteria{Header: []goimap.SearchCriteriaHeaderField{{Key: "From", Value: "sender7@"}}}, (n+42)/50)
	})
	b.Run("sort-date", func(b *testing.B) {
		timed(b, func(b *testing.B) {
			data, err := cl.Sort(&imapclient.SortOptions{SearchCriteria: &goimap.SearchCriteria{}, SortCriteria: []imapclient.SortCriterion{{Key: imapclient.SortKeyDate}}}).Wait()
			if err != nil {
				b.Fatal(err)
			}
			if len(data) != n {
				b.Fatalf("sorted %d, want %d", len(data), n)
			}
		})
	})
}

// base64Lines encodes p in base64 lines of 76 characters.
func base64Lines(p []byte) string {
	enc := base64.StdEncoding.EncodeToString(p)
	var out strings.Builder
	for len(enc) > 76 {
		out.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	out.WriteString(enc)
	return out.String()
}
