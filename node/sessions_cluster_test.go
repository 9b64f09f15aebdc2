package node

import (
	"encoding/json"
	"math"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

// freeClusterAddr returns a loopback address whose port was free.
func freeClusterAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// peerUp reports whether the node serving dir has heard from node id
// lately, and the node's clock offset and its uncertainty as the status
// shows them then.
func peerUp(t *testing.T, dir, id string) (up bool, offset, uncertainty *float64) {
	t.Helper()
	var st struct {
		Nodes []struct {
			ID          string   `json:"id"`
			Health      string   `json:"health"`
			Offset      *float64 `json:"clock_offset_seconds"`
			Uncertainty *float64 `json:"clock_uncertainty_seconds"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, "", "cluster", "status", "--json", "--data", dir)), &st); err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.ID == id && n.Health == "up" {
			return true, n.Offset, n.Uncertainty
		}
	}
	return false, nil, nil
}

func ptrString(p *float64) string {
	if p == nil {
		return "none"
	}
	return strconv.FormatFloat(*p, 'f', 3, 64)
}

// TestSessionKillAcrossNodes: in a two-node cluster (two nodes in one
// process), an IMAP session open on the second node is ended by "user
// sessions --kill" and by "user passwd" given to the first, through the
// broadcast, and "user sessions" on the first lists it.
func TestSessionKillAcrossNodes(t *testing.T) {
	const token = "sessions-bootstrap-token-0123456789"
	cfg1 := testConfig(t)
	cfg1.NodeID = "n1"
	cfg1.Cluster.Listen = freeClusterAddr(t)
	cfg1.Cluster.BootstrapToken = token
	startNode(t, cfg1)
	cfg2 := testConfig(t)
	cfg2.NodeID = "n2"
	cfg2.Cluster.Listen = freeClusterAddr(t)
	cfg2.Cluster.Join = cfg1.Cluster.Listen
	cfg2.Cluster.Token = token
	n2 := startNode(t, cfg2)

	dir1 := cfg1.DataDir
	const user, password = "dave@example.test", "dave-first-pw"
	mustCLI(t, "", "domain", "add", "--data", dir1, "example.test")
	mustCLI(t, password+"\n", "user", "add", "--data", dir1, user)
	login := func(pw string) *imapclient.Client {
		t.Helper()
		c, err := imapclient.DialTLS(n2.Addr(ListenIMAPS).String(), &imapclient.Options{TLSConfig: clientTLS(t, cfg2)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := c.Login(user, pw).Wait()
			if err == nil {
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("login on n2: %v", err)
			}
			time.Sleep(100 * time.Millisecond) // the user may not have reached n2 yet
		}
	}
	// The broadcast reaches the nodes that answered a ping lately.
	deadline := time.Now().Add(30 * time.Second)
	for {
		up, offset, unc := peerUp(t, dir1, "n2")
		if up {
			// Both nodes read one clock: the offset is within the
			// measurement's uncertainty (and a loaded machine's delays).
			if offset == nil || unc == nil || math.Abs(*offset) > *unc+0.5 {
				t.Fatalf("n2's clock offset in n1's status: %v ± %v, want about 0", ptrString(offset), ptrString(unc))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("n2 never showed up as up in n1's cluster status")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out := mustCLI(t, "", "cluster", "status", "--data", dir1); !strings.Contains(out, "CLOCK") || !strings.Contains(out, "+0.000s ±0.000s") {
		t.Errorf("cluster status shows no clock column, or not this node's own zero offset:\n%s", out)
	}

	c := login(password)
	if got := n2.sessions.registry.List(user); len(got) != 1 {
		t.Fatalf("n2's open sessions: %+v", got)
	}
	// n1 lists the session open on n2, asking it by broadcast.
	// Under load n2 may answer a listing late (it then shows as missing):
	// ask again until it has answered.
	rep := sessionsReport(t, dir1, user, func(r SessionsReport) bool { return len(r.Logins) > 0 && len(r.Missing) == 0 })
	if len(rep.Open) != 1 || rep.Open[0].Node != "n2" || rep.Open[0].Protocol != "imap" || len(rep.Answered) != 2 || len(rep.Missing) != 0 {
		t.Errorf("n1's report of the sessions: %+v", rep)
	}
	if len(rep.Logins) != 1 || rep.Logins[0].Node != "n2" || !rep.Logins[0].Success {
		t.Errorf("n1's report of the logins: %+v", rep.Logins)
	}
	if out := mustCLI(t, "", "user", "sessions", "--kill", "--data", dir1, user); !strings.Contains(out, "0 session(s)") || !strings.Contains(out, "n1") {
		t.Errorf("user sessions --kill on n1: %q", out)
	}
	waitEnded(t, c, "sessions --kill on the other node")

	c = login(password)
	mustCLI(t, "dave-second-pw\n", "user", "passwd", "--data", dir1, user)
	waitEnded(t, c, "user passwd on the other node")
}
