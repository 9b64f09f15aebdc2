package protocoltest

import "testing"

func TestSubscriptionsOutliveMailboxes(t *testing.T) {
	_, a := newUser(t, "subs@example.test")
	CheckSubscriptions(t, a)
}
