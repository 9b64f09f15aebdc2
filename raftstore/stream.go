package raftstore

import (
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// StreamLayer carries one Raft group's connections: Accept yields streams
// other replicas opened to this one, Dial opens a stream to the replica at
// a node's cluster address. The cluster's multiplexed port provides one
// per group, so raftstore never sees TLS or the port's framing.
type StreamLayer interface {
	net.Listener
	Dial(address string, timeout time.Duration) (net.Conn, error)
}

// streamAdapter turns a StreamLayer into hashicorp/raft's.
type streamAdapter struct{ StreamLayer }

func (a streamAdapter) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return a.StreamLayer.Dial(string(address), timeout)
}
