package mailstore_test

import (
	"testing"

	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

// TestSubscriptionsOutliveMailboxes: the cluster store keeps the
// subscription rules of protocoltest.CheckSubscriptions.
func TestSubscriptionsOutliveMailboxes(t *testing.T) {
	env := newEnv(t)
	protocoltest.CheckSubscriptions(t, login(t, env, "subs@example.test"))
}
