package mailstore_test

import (
	"testing"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
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
	if err := env.dir().SetQuota(ctx(t), "quota@example.test", directory.QuotaSetting{Bytes: 4000}); err != nil {
		t.Fatal(err)
	}
	protocoltest.CheckQuotaRefusals(t, a, 4000)
}
