package cluster_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/transport"
)

// TestRemoteReadsReuseConnections: reads a node forwards to the leader
// of another node go over the connections it already has. An answer the
// client decoded without reading the body to its end made net/http drop
// the connection, so each read of a large message cost a new TLS
// handshake between the nodes.
func TestRemoteReadsReuseConnections(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{MailShards: 1})
	const user = "reuse@example.org"
	c.AddUser(user, "correct horse battery")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const mailShard = 1 // mail shards are numbered from 1, after the meta shard
	leader := c.WaitLeader(mailShard, 30*time.Second)
	var reader *clustertest.Node
	for _, n := range c.Nodes {
		if n != leader {
			reader = n
			break
		}
	}

	// 300 KiB of random bytes in base64 lines: the answer stays about
	// that large sealed, far more than net/http reads ahead of a decoder.
	random := make([]byte, 225<<10)
	rand.Read(random)
	var lines strings.Builder
	enc := base64.StdEncoding.EncodeToString(random)
	for len(enc) > 76 {
		lines.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	lines.WriteString(enc + "\r\n")
	body := "Subject: big\r\nContent-Transfer-Encoding: base64\r\n\r\n" + lines.String()
	acct := reader.Login(user, "correct horse battery")
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acct.Append(ctx, inbox.ID, []byte(body), nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	msgs := inboxMessages(t, acct)
	if len(msgs) != 1 {
		t.Fatalf("INBOX holds %d messages, want the one appended", len(msgs))
	}
	blob := msgs[0].Blob
	// The first read may open a connection; the pool then has one.
	if _, err := acct.Body(ctx, blob); err != nil {
		t.Fatal(err)
	}
	trans := reader.Cluster().Transport()
	before := trans.Opened(transport.KindRPC)
	const reads = 30
	for range reads {
		got, err := acct.Body(ctx, blob)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, []byte(body)) {
			t.Fatalf("read back %d bytes, want the %d appended", len(got), len(body))
		}
	}
	// Health pings and the control loop share the pool; a handful of new
	// connections is theirs, one per read is the leak.
	if opened := trans.Opened(transport.KindRPC) - before; opened > 5 {
		t.Fatalf("%d reads of a large message from %s opened %d connections to its peers", reads, reader.ID, opened)
	}
}
