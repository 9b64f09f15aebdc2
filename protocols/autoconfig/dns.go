package autoconfig

import (
	"fmt"
	"strings"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// DNS records that let clients find the servers without fetching a
// document: the SRV records of RFC 6186 and RFC 8314, and the names the
// Thunderbird and Outlook lookups try.

// RecordTTL is the TTL of the records DNSRecords returns.
const RecordTTL = 3600

// Record is one DNS resource record.
type Record struct {
	// Name is the owner name, fully qualified with a trailing dot.
	Name string
	// Type is "SRV" or "CNAME".
	Type string
	// Data is the record's data in zone-file form.
	Data string
	// Comment says what the record is for.
	Comment string
}

// String returns the record as a zone-file line.
func (r Record) String() string {
	line := fmt.Sprintf("%s %d IN %s %s", r.Name, RecordTTL, r.Type, r.Data)
	if r.Comment != "" {
		line += " ; " + r.Comment
	}
	return line
}

// DNSRecords returns the records for a domain: an SRV record per
// service (a "." target for a service not offered, which tells clients
// not to try it, RFC 6186 section 4), then CNAMEs of autoconfig.DOMAIN
// and autodiscover.DOMAIN and the _autodiscover._tcp SRV record, all
// pointing at Host: the web server in front of the node's HTTP listener
// must answer for those names on port 443.
func (c Config) DNSRecords(domain string) ([]Record, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	d, err := schema.CanonicalDomain(domain)
	if err != nil {
		return nil, err
	}
	target := strings.TrimSuffix(c.Host, ".") + "."
	var out []Record
	for _, s := range c.all() {
		r := Record{Name: "_" + s.name + "._tcp." + d + ".", Type: "SRV"}
		if s.port > 0 {
			r.Data = fmt.Sprintf("%d 1 %d %s", s.priority, s.port, target)
			r.Comment = strings.ToUpper(s.kind) + " " + tlsMode(s)
		} else {
			r.Data = "0 0 0 ."
			r.Comment = "not offered"
		}
		out = append(out, r)
	}
	out = append(out,
		Record{Name: "autoconfig." + d + ".", Type: "CNAME", Data: target, Comment: "Thunderbird autoconfig (HTTPS)"},
		Record{Name: "autodiscover." + d + ".", Type: "CNAME", Data: target, Comment: "Outlook autodiscover (HTTPS)"},
		Record{Name: "_autodiscover._tcp." + d + ".", Type: "SRV", Data: "0 1 443 " + target, Comment: "Outlook autodiscover"},
	)
	return out, nil
}

func tlsMode(s service) string {
	if s.implicitTLS {
		return "implicit TLS"
	}
	return "STARTTLS"
}
