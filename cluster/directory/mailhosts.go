package directory

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// mailHostPrefix starts the meta setting that records, by node id, the
// public host name a node receives mail as: public DNS names, kept in
// the clear. DNS records (MX, the MTA-STS policy's mx lines) list them.
const mailHostPrefix = "mail_host/"

// maxHostName bounds a recorded host name (RFC 1035).
const maxHostName = 253

// SetMailHost records the public host name of a node (its hostname
// setting); a node calls it at every start, and it writes only when the
// name changed.
func (d *Directory) SetMailHost(ctx context.Context, nodeID, host string) error {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if nodeID == "" || host == "" || len(host) > maxHostName {
		return fmt.Errorf("mail host %q of node %q: %w", host, nodeID, schema.ErrInvalid)
	}
	key := mailHostPrefix + nodeID
	if v, err := d.setting(key); err == nil && string(v) == host {
		return nil
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: key, Value: []byte(host)}); err != nil {
		return fmt.Errorf("record mail host: %w", err)
	}
	return nil
}

// MailHosts returns the recorded host names by node id. A node removed
// from the cluster keeps its entry; callers keep the members' names
// only.
func (d *Directory) MailHosts() (map[string]string, error) {
	var s map[string][]byte
	if err := d.c.ReadMeta(func(r *raftstore.Reader) error { s = r.Settings(mailHostPrefix); return nil }); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(s))
	for k, v := range s {
		out[strings.TrimPrefix(k, mailHostPrefix)] = string(v)
	}
	return out, nil
}

// SortedHosts returns the distinct names of hosts, sorted.
func SortedHosts(hosts map[string]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, h := range hosts {
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	sort.Strings(out)
	return out
}
