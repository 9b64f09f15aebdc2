package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols/autoconfig"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

const dkimUsage = `
DKIM signing keys (see DNS records and DKIM in the README):
  mailnode dkim show   --data DIR [--json] DOMAIN   the TXT records to publish
  mailnode dkim rotate --data DIR [--overlap DURATION] [--json] DOMAIN
    start a new selector pair (mcYYYYMMDDe / mcYYYYMMDDr) that signs from
    now on; the old pair stays published, listed as "retiring until
    DATE", for the overlap (default 168h), then it is dropped
  mailnode domain dns [--data DIR] [--json] [--host NAME] DOMAIN
    every record the domain needs: MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT
    (from the running node) and the client discovery SRV records
`

// Admin endpoints of DKIM keys and DNS records ({name} is a domain).
const (
	pathDKIM       = "/v1/domains/{name}/dkim"
	pathDKIMRotate = "/v1/domains/{name}/dkim/rotate"
	pathMailDNS    = "/v1/domains/{name}/dns"
)

// dkimRotateRequest asks for a rotation.
type dkimRotateRequest struct {
	// Overlap is how long the old selectors stay published, a Go
	// duration ("" for the default).
	Overlap string `json:"overlap,omitempty"`
}

// dnsRecord is one DNS record as the admin socket and --json give it.
type dnsRecord struct {
	Name    string `json:"name"`
	TTL     int    `json:"ttl"`
	Type    string `json:"type"`
	Data    string `json:"data"`
	Comment string `json:"comment,omitempty"`
}

func toDNSRecords(recs []autoconfig.Record) []dnsRecord {
	out := make([]dnsRecord, 0, len(recs))
	for _, r := range recs {
		out = append(out, dnsRecord{Name: r.Name, TTL: autoconfig.RecordTTL, Type: r.Type, Data: r.Data, Comment: r.Comment})
	}
	return out
}

func (r dnsRecord) record() autoconfig.Record {
	return autoconfig.Record{Name: r.Name, Type: r.Type, Data: r.Data, Comment: r.Comment}
}

// adminStatus is the HTTP status of a directory error.
func adminStatus(err error) int {
	switch {
	case errors.Is(err, schema.ErrNoSuchDomain):
		return http.StatusNotFound
	case errors.Is(err, schema.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, schema.ErrUnavailable), errors.Is(err, schema.ErrConflict):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// dkimAdmin serves the DKIM and DNS record endpoints and passes
// everything else to next.
func (n *Node) dkimAdmin(next http.Handler, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any, err error) {
		if err != nil {
			writeBackupError(w, adminStatus(err), err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET "+pathDKIM, func(w http.ResponseWriter, r *http.Request) {
		recs, err := n.directory.DKIMRecords(r.Context(), r.PathValue("name"))
		reply(w, recs, err)
	})
	mux.HandleFunc("POST "+pathDKIMRotate, func(w http.ResponseWriter, r *http.Request) {
		var req dkimRotateRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			writeBackupError(w, http.StatusBadRequest, fmt.Errorf("bad rotate request: %v", err))
			return
		}
		var overlap time.Duration
		if req.Overlap != "" {
			var err error
			if overlap, err = time.ParseDuration(req.Overlap); err != nil || overlap <= 0 {
				writeBackupError(w, http.StatusBadRequest, fmt.Errorf("overlap %q: want a positive duration such as 168h", req.Overlap))
				return
			}
		}
		recs, err := n.directory.RotateDKIM(r.Context(), r.PathValue("name"), overlap)
		if err == nil {
			log.Info("admin request", "route", r.Pattern)
		}
		reply(w, recs, err)
	})
	mux.HandleFunc("GET "+pathMailDNS, func(w http.ResponseWriter, r *http.Request) {
		recs, err := n.mailDNSRecords(r.Context(), r.PathValue("name"), r.URL.Query().Get("host"))
		reply(w, toDNSRecords(recs), err)
	})
	mux.Handle("/", next)
	return mux
}

// domainPath fills a domain into an endpoint pattern.
func domainPath(pattern, domain string) string {
	return strings.Replace(pattern, "{name}", url.PathEscape(domain), 1)
}

// dkimCommand is "mailnode dkim show|rotate".
func (c CLI) dkimCommand(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "show" && args[0] != "rotate") {
		return fmt.Errorf("%w: dkim needs show or rotate", errUsage)
	}
	sub := args[0]
	fs := newFlagSet("dkim " + sub)
	data := fs.String("data", "", "data directory of the node")
	config := fs.String("config", "", "config file")
	asJSON := fs.Bool("json", false, "JSON output")
	var overlap *time.Duration
	if sub == "rotate" {
		overlap = fs.Duration("overlap", directory.DefaultDKIMOverlap, "how long the old selectors stay published")
	}
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: dkim %s takes 1 argument (DOMAIN), got %d", errUsage, sub, len(pos))
	}
	domain, err := schema.CanonicalDomain(pos[0])
	if err != nil {
		return err
	}
	if overlap != nil && *overlap <= 0 {
		return fmt.Errorf("%w: --overlap %s: want a positive duration", errUsage, *overlap)
	}
	dir, err := dataDirArg("dkim", *data, *config)
	if err != nil {
		return err
	}
	client := newBackupClient(dir)
	defer client.close()
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	var resp *http.Response
	if sub == "show" {
		resp, err = client.request(ctx, http.MethodGet, domainPath(pathDKIM, domain))
	} else {
		body, _ := json.Marshal(dkimRotateRequest{Overlap: overlap.String()})
		resp, err = client.requestBody(ctx, http.MethodPost, domainPath(pathDKIMRotate, domain), body)
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var recs []directory.DKIMRecord
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&recs); err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if *asJSON {
		return writeJSON(c.Stdout, recs)
	}
	if sub == "rotate" {
		fmt.Fprintf(c.Stdout, "; %s now signs with %s and %s; publish their records before mail goes out.\n", domain, recs[0].Selector, recs[1].Selector)
	}
	fmt.Fprintf(c.Stdout, "; DKIM keys of %s: publish these TXT records.\n", domain)
	for _, r := range recs {
		comment := r.Algorithm + ", signing"
		if !r.RetiringUntil.IsZero() {
			comment = r.Algorithm + ", retiring until " + r.RetiringUntil.Format(time.DateOnly) + " (then remove it)"
		}
		fmt.Fprintln(c.Stdout, autoconfig.Record{Name: r.Name, Type: "TXT", Data: r.ZoneData(), Comment: comment}.String())
	}
	return nil
}

// fetchMailDNS asks the node serving dir for a domain's records (with
// clientHost, if set, as the host clients connect to).
func fetchMailDNS(ctx context.Context, dir, domain, clientHost string) ([]dnsRecord, error) {
	client := newBackupClient(dir)
	defer client.close()
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	path := domainPath(pathMailDNS, domain)
	if clientHost != "" {
		path += "?" + url.Values{"host": {clientHost}}.Encode()
	}
	resp, err := client.request(ctx, http.MethodGet, path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var recs []dnsRecord
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&recs); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return recs, nil
}

// mailDNSDataDir returns the data directory of the node domain dns asks
// for the mail records, and whether it was named explicitly (--data).
func mailDNSDataDir(data string, cfg Config) (string, bool) {
	if data != "" {
		return data, true
	}
	if cfg.DataDir != "" {
		return cfg.DataDir, false
	}
	return os.Getenv(dataDirEnv), false
}
