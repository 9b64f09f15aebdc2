package node

import (
	"encoding/json"
	"strings"

	"github.com/mailcluster/mailcluster/protocols"
)

// authTopic is the broadcast topic of the login-failure state.
const authTopic = "auth"

// sharedAuthState returns the auth guard's failure counters and known
// addresses, shared with every other node of the cluster through
// broadcasts: failures counted on any node lock a client address or a
// user out on all of them.
func (n *Node) sharedAuthState() *protocols.SharedAuthState {
	state := protocols.NewSharedAuthState(func(e protocols.AuthEvent) {
		b, err := json.Marshal(e)
		if err != nil {
			return
		}
		n.cluster.Broadcast(authTopic, b)
	})
	n.cluster.HandleBroadcast(authTopic, func(_ string, msg []byte) {
		var e protocols.AuthEvent
		if err := json.Unmarshal(msg, &e); err != nil {
			n.log.Debug("malformed auth event from a peer", "err", err)
			return
		}
		state.Apply(e, n.now())
		// An operator's unblock of an address lifts its command-rate
		// refusals on this node too.
		if e.Kind == protocols.AuthEventClear && strings.HasPrefix(e.Key, "ip:") {
			n.cmdRate.Load().ClearValue(strings.TrimPrefix(e.Key, "ip:"))
		}
	})
	return state
}
