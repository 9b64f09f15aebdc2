package protocoltest

import "testing"

func TestSubscriptionsOutliveMailboxes(t *testing.T) {
	_, a := newUser(t, "subs@example.test")
	CheckSubscriptions(t, a)
}

func TestRecentClaims(t *testing.T) {
	env, a := newUser(t, "recent@example.test")
	b := env.Login(t, "recent@example.test", pw)
	CheckRecentClaims(t, a, b, mustMailbox(t, a, "INBOX").ID)
}

func TestStoreFlagsIf(t *testing.T) {
	env, a := newUser(t, "condstore@example.test")
	b := env.Login(t, "condstore@example.test", pw)
	CheckStoreFlagsIf(t, a, b, mustMailbox(t, a, "INBOX").ID)
}

func TestAppendBatchAndQuota(t *testing.T) {
	_, a := newUser(t, "batch@example.test")
	CheckAppendBatch(t, a)
	env, b := newUser(t, "quota@example.test")
	if err := env.Mem.SetQuota("quota@example.test", 4000); err != nil {
		t.Fatal(err)
	}
	CheckQuotaRefusals(t, b, 4000)
}
