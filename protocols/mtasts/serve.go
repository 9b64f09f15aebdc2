package mtasts

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// PolicyPath is where a domain's policy is served, on the host
// mta-sts.DOMAIN (RFC 8461 section 3.3).
const PolicyPath = "/.well-known/mta-sts.txt"

// Domains says which domains the cluster serves. The directory
// implements it.
type Domains interface {
	HostsDomain(ctx context.Context, domain string) (bool, error)
}

// Handler serves PolicyPath for requests to mta-sts.DOMAIN of every
// served DOMAIN, with the policy policy returns at that moment (its mx
// list follows the cluster's hosts). Other hosts get 404; a directory
// that cannot answer gives 503, never a policy for a domain not served.
func Handler(policy func() Policy, domains Domains, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		domain, ok := strings.CutPrefix(host, "mta-sts.")
		if !ok || domain == "" {
			http.NotFound(w, r)
			return
		}
		served, err := domains.HostsDomain(r.Context(), domain)
		if err != nil {
			// A malformed name is one we do not serve.
			if errors.Is(err, schema.ErrInvalid) {
				http.NotFound(w, r)
				return
			}
			log.Warn("mta-sts policy request: directory unavailable", "err", err)
			http.Error(w, "directory unavailable", http.StatusServiceUnavailable)
			return
		}
		if !served {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Cache-Control", "max-age=300")
		io.WriteString(w, policy().Text())
	})
}
