package mailstore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestAppendBatchAndQuota: the cluster store keeps the rules of
// protocoltest.CheckAppendBatch (a large message staged chunk by chunk
// and committed with a small one in one command) and
// CheckQuotaRefusals (a limit set through the directory, enforced by the
// shard).
func TestAppendBatchAndQuota(t *testing.T) {
	env := newEnv(t)
	protocoltest.CheckAppendBatch(t, login(t, env, "batch@example.test"))
	a := login(t, env, "quota@example.test")
	if err := env.dir().SetQuota(ctx(t), "quota@example.test", directory.QuotaSetting{Limit: 4000}); err != nil {
		t.Fatal(err)
	}
	protocoltest.CheckQuotaRefusals(t, a, 4000)

	// A limit on the number of messages.
	m := login(t, env, "count@example.test")
	if err := env.dir().SetQuota(ctx(t), "count@example.test", directory.QuotaSetting{Resource: directory.QuotaMessages, Limit: 1}); err != nil {
		t.Fatal(err)
	}
	inbox := mailbox(t, m, "INBOX")
	if _, err := m.Append(ctx(t), inbox.ID, []byte("Subject: 1\r\n\r\n1\r\n"), nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Append(ctx(t), inbox.ID, []byte("Subject: 2\r\n\r\n2\r\n"), nil, time.Time{}); !errors.Is(err, schema.ErrOverQuota) {
		t.Fatalf("second message with a limit of one: %v", err)
	}
	if q, err := m.Quota(ctx(t)); err != nil || q.MessageLimit != 1 || q.Messages != 1 || q.Limit != 0 {
		t.Fatalf("quota %+v, %v", q, err)
	}
}
