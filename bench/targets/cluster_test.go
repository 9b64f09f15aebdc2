package targets

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/node"
)

// testCluster3 returns a cluster3 with ports assigned, not started.
func testCluster3(t *testing.T) *cluster3 {
	t.Helper()
	c := &cluster3{dir: t.TempDir()}
	for i := range clusterNodes {
		id := "n" + string(rune('1'+i))
		dir := filepath.Join(c.dir, id)
		base := 20000 + 10*i
		c.nodes = append(c.nodes, &clusterNode{id: id, region: "r" + string(rune('1'+i)), dir: dir,
			data: filepath.Join(dir, "data"), config: filepath.Join(dir, "mailnode.toml"),
			ports: []int{base + 1, base + 2, base + 3, base + 4, base + 5}})
	}
	return c
}

// TestClusterNodeConfig checks a cluster node's configuration against
// mailnode's own parser: loopback listeners, the cluster port the
// command line names, three replicas.
func TestClusterNodeConfig(t *testing.T) {
	c := testCluster3(t)
	seen := map[string]bool{}
	for _, n := range c.nodes {
		conf := nodeConfig{Hostname: "mail.bench.test", Data: n.data, CertFile: "/c.pem", KeyFile: "/k.pem",
			SMTP: n.ports[0], IMAP: n.ports[1], POP3: n.ports[2], HTTP: n.ports[3], Cluster: n.ports[4], Replicas: clusterReplicas}.render()
		cfg, err := node.Parse("mailnode.toml", []byte(conf))
		if err != nil {
			t.Fatalf("mailnode rejects %s's config: %v", n.id, err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("mailnode finds %s's config invalid: %v", n.id, err)
		}
		if cfg.Cluster.Listen != n.clusterAddr() || cfg.Cluster.Replicas != 3 || cfg.DataDir != n.data {
			t.Errorf("%s: cluster listen %q replicas %d data %q", n.id, cfg.Cluster.Listen, cfg.Cluster.Replicas, cfg.DataDir)
		}
		ep := n.endpoints()
		if cfg.Listen.SMTP != ep.SMTP || cfg.Listen.IMAP != ep.IMAP || cfg.Listen.POP3 != ep.POP3 || cfg.Listen.HTTP != n.httpAddr() {
			t.Errorf("%s: listeners %+v, endpoints %+v", n.id, cfg.Listen, ep)
		}
		for _, m := range regexp.MustCompile(`"([^"]*):(\d+)"`).FindAllStringSubmatch(conf, -1) {
			if m[1] != "127.0.0.1" {
				t.Errorf("%s: listener %s is not on loopback", n.id, m[0])
			}
			if seen[m[2]] {
				t.Errorf("port %s used twice", m[2])
			}
			seen[m[2]] = true
		}
	}
	// The single target keeps a node alone: any cluster port, default replicas.
	cfg, err := node.Parse("mailnode.toml", []byte(mailnodeConfig("h", "/d", []int{1, 2, 3, 4}, "/c", "/k")))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Listen != "127.0.0.1:0" || cfg.Cluster.Replicas != 0 {
		t.Errorf("single node: cluster %+v", cfg.Cluster)
	}
}

// TestServeArgs checks the command lines that form the cluster: node 1
// bootstraps with the token, the others join it on their first start
// only, and each names its own directory, id, region and cluster port.
func TestServeArgs(t *testing.T) {
	c := testCluster3(t)
	flag := func(args []string, name string) (string, bool) {
		i := slices.Index(args, "--"+name)
		if i < 0 || i+1 >= len(args) {
			return "", false
		}
		return args[i+1], true
	}
	for _, first := range []bool{true, false} {
		for i, n := range c.nodes {
			args := serveArgs(c.nodes, i, "token-0123456789abcdef", first)
			if args[0] != "serve" {
				t.Fatalf("args %v", args)
			}
			want := map[string]string{"config": n.config, "data": n.data, "node-id": n.id, "region": n.region,
				"raft-profile": "lan", "cluster-listen": n.clusterAddr()}
			for name, v := range want {
				if got, _ := flag(args, name); got != v {
					t.Errorf("node %s (first %v): --%s %q, want %q", n.id, first, name, got, v)
				}
			}
			boot, hasBoot := flag(args, "bootstrap-token")
			join, hasJoin := flag(args, "join")
			tok, hasTok := flag(args, "token")
			switch {
			case i == 0:
				if !hasBoot || boot != "token-0123456789abcdef" || hasJoin || hasTok {
					t.Errorf("node 1 (first %v): %v", first, args)
				}
			case first:
				if hasBoot || join != c.nodes[0].clusterAddr() || tok != "token-0123456789abcdef" {
					t.Errorf("node %s first start: %v", n.id, args)
				}
			default:
				if hasBoot || hasJoin || hasTok {
					t.Errorf("node %s restart joins again: %v", n.id, args)
				}
			}
		}
	}
	tok, err := newToken()
	if err != nil {
		t.Fatal(err)
	}
	if tok2, _ := newToken(); len(tok) < 16 || tok == tok2 || strings.ContainsAny(tok, " \n") {
		t.Errorf("tokens %q, %q: want distinct, at least 16 characters", tok, tok2)
	}
}

// statusJSON is `mailnode cluster status --json` of three nodes with two
// shards; change edits it before it is decoded.
func statusJSON(t *testing.T, change func(map[string]any)) clusterStatus {
	t.Helper()
	replicas := func(leader string) []any {
		var out []any
		for _, n := range []string{"n1", "n2", "n3"} {
			state := "follower"
			if n == leader {
				state = "leader"
			}
			out = append(out, map[string]any{"node": n, "voter": true, "state": state, "applied_index": 7, "lag": 0, "placed": true})
		}
		return out
	}
	doc := map[string]any{
		"cluster_id": "c1", "node": "n1",
		"nodes": []any{
			map[string]any{"id": "n1", "region": "r1", "address": "127.0.0.1:1", "health": "up"},
			map[string]any{"id": "n2", "region": "r2", "address": "127.0.0.1:2", "health": "up"},
			map[string]any{"id": "n3", "region": "r3", "address": "127.0.0.1:3", "health": "up"},
		},
		"shards": []any{
			map[string]any{"shard": 0, "leader": "n1", "term": 2, "commit_index": 40, "replicas": replicas("n1")},
			map[string]any{"shard": 1, "home": "r2", "leader": "n2", "term": 3, "commit_index": 7, "replicas": replicas("n2")},
		},
	}
	if change != nil {
		change(doc)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var st clusterStatus
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestConverged(t *testing.T) {
	shard := func(doc map[string]any, i int) map[string]any { return doc["shards"].([]any)[i].(map[string]any) }
	replica := func(doc map[string]any, s, r int) map[string]any {
		return shard(doc, s)["replicas"].([]any)[r].(map[string]any)
	}
	if err := converged(statusJSON(t, nil), 3, 3, ""); err != nil {
		t.Fatalf("a converged cluster: %v", err)
	}
	if err := converged(statusJSON(t, nil), 3, 3, "n2"); err != nil {
		t.Fatalf("a converged cluster with n2 back: %v", err)
	}
	tests := map[string]struct {
		change   func(map[string]any)
		rejoined string
	}{
		"node unreachable": {change: func(d map[string]any) { d["nodes"].([]any)[2].(map[string]any)["health"] = "unreachable" }},
		"node missing":     {change: func(d map[string]any) { d["nodes"] = d["nodes"].([]any)[:2] }},
		"no leader":        {change: func(d map[string]any) { shard(d, 1)["leader"] = "" }},
		"non-voter":        {change: func(d map[string]any) { replica(d, 1, 2)["voter"] = false }},
		"two replicas": {change: func(d map[string]any) {
			shard(d, 1)["replicas"] = shard(d, 1)["replicas"].([]any)[:2]
		}},
		"no shards":            {change: func(d map[string]any) { d["shards"] = []any{} }},
		"rejoined not running": {change: func(d map[string]any) { replica(d, 0, 1)["state"] = "unknown" }, rejoined: "n2"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if err := converged(statusJSON(t, tt.change), 3, 3, tt.rejoined); err == nil {
				t.Fatal("reported converged")
			}
		})
	}
	// An unknown replica state of another node than the one rejoining
	// does not hold the wait.
	if err := converged(statusJSON(t, tests["rejoined not running"].change), 3, 3, "n3"); err != nil {
		t.Fatalf("n2's replica state held a wait for n3: %v", err)
	}
}

func TestLeaderOf(t *testing.T) {
	st := statusJSON(t, nil)
	if l, err := leaderOf(st, 1); err != nil || l != "n2" {
		t.Fatalf("leader of shard 1: %q, %v", l, err)
	}
	if _, err := leaderOf(st, 9); err == nil {
		t.Fatal("a shard not in the status has a leader")
	}
	st = statusJSON(t, func(d map[string]any) { d["shards"].([]any)[1].(map[string]any)["leader"] = "" })
	if _, err := leaderOf(st, 1); err == nil {
		t.Fatal("an empty leader was returned")
	}
}
