package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
)

// Admin endpoints of the login lockouts.
const (
	pathSecurityBlocked = "/v1/security/blocked"
	pathSecurityUnblock = "/v1/security/unblock"
)

const securityUsage = `
Login lockouts and command-rate limits:
  mailnode security blocked [--json]          running lockouts (addresses and users, cluster-wide) and
                                              addresses whose commands this node refuses (command_rate)
  mailnode security unblock ADDRESS|USER      lift one on every node (an IPv6 address stands for its /64)
    (both take --data DIR or --config FILE)
`

// unblockRequest names what to unblock.
type unblockRequest struct {
	Value string `json:"value"`
}

// unblockResult says whether a lockout was running.
type unblockResult struct {
	WasLocked bool `json:"was_locked"`
}

// securityAdmin serves the lockout endpoints and passes everything else
// to next.
func (n *Node) securityAdmin(next http.Handler, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathSecurityBlocked, func(w http.ResponseWriter, r *http.Request) {
		state := n.authState.Load()
		if state == nil {
			writeBackupError(w, http.StatusServiceUnavailable, errors.New("the node is not serving yet"))
			return
		}
		// Command-rate refusals are this node's own: each node limits what
		// it serves.
		list := append(state.Lockouts(n.now()), n.cmdRate.Load().Limited()...)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(list)
	})
	mux.HandleFunc("POST "+pathSecurityUnblock, func(w http.ResponseWriter, r *http.Request) {
		state := n.authState.Load()
		if state == nil {
			writeBackupError(w, http.StatusServiceUnavailable, errors.New("the node is not serving yet"))
			return
		}
		var req unblockRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
			writeBackupError(w, http.StatusBadRequest, fmt.Errorf("bad unblock request: %v", err))
			return
		}
		was, err := state.Unblock(req.Value, n.now())
		if err != nil {
			writeBackupError(w, http.StatusBadRequest, err)
			return
		}
		// The other nodes lift theirs when the unblock reaches them.
		if n.cmdRate.Load().ClearValue(req.Value) {
			was = true
		}
		log.Info("admin request", "route", r.Pattern, "was_locked", was)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(unblockResult{WasLocked: was})
	})
	mux.Handle("/", next)
	return mux
}

// securityCommand is "mailnode security blocked|unblock".
func (c CLI) securityCommand(ctx context.Context, args []string) error {
	a, err := parseAdminCommand("security", []string{"blocked", "unblock"}, args)
	if err != nil {
		return err
	}
	if a.sub == "blocked" {
		if len(a.args) != 0 {
			return fmt.Errorf("%w: security blocked takes no arguments", errUsage)
		}
		var list []protocols.Lockout
		if err := a.call(ctx, http.MethodGet, pathSecurityBlocked, nil, 64<<20, &list); err != nil {
			return err
		}
		if a.asJSON {
			if list == nil {
				list = []protocols.Lockout{}
			}
			return writeJSON(c.Stdout, list)
		}
		if len(list) == 0 {
			fmt.Fprintln(c.Stdout, "no lockouts")
			return nil
		}
		tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SCOPE\tLOCKED\tUNTIL")
		for _, l := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s (%s left)\n", l.Scope, l.Value, l.Until.UTC().Format(time.RFC3339), time.Until(l.Until).Round(time.Second))
		}
		return tw.Flush()
	}
	if len(a.args) != 1 {
		return fmt.Errorf("%w: security unblock ADDRESS|USER", errUsage)
	}
	body, _ := json.Marshal(unblockRequest{Value: a.args[0]})
	var res unblockResult
	if err := a.call(ctx, http.MethodPost, pathSecurityUnblock, body, 4096, &res); err != nil {
		return err
	}
	if res.WasLocked {
		fmt.Fprintf(c.Stdout, "%s unblocked on every node\n", a.args[0])
	} else {
		fmt.Fprintf(c.Stdout, "%s was not locked out here; its failures are forgotten on every node\n", a.args[0])
	}
	return nil
}
