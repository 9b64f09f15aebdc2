package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Admin endpoints of the outbound queue.
const (
	pathQueue = "/v1/queue" // GET: list; GET /v1/queue/ID: show; POST /v1/queue/ID/ACTION
)

const queueUsage = `
Outbound queue (mail to other domains, cluster-wide):
  mailnode queue list [--json]               every queued message: id, age, next attempt, recipients
  mailnode queue show ID [--json]            one message: envelope and each recipient's last result
  mailnode queue retry ID                    attempt delivery now
  mailnode queue hold ID                     stop attempts until released (expiry still counts)
  mailnode queue release ID                  resume attempts, now
  mailnode queue delete ID                   drop the message without a report to the sender
    (all take --data DIR or --config FILE)
`

// queueEntry is a queue entry as the admin API shows it.
type queueEntry struct {
	ID          string                     `json:"id"`
	Shard       uint32                     `json:"shard"`
	Size        uint64                     `json:"size"`
	Created     time.Time                  `json:"created"`
	NextAttempt time.Time                  `json:"next_attempt"`
	Held        bool                       `json:"held"`
	Finished    *time.Time                 `json:"finished,omitempty"`
	Attempts    int                        `json:"attempts"`
	Sender      string                     `json:"sender"`
	From        string                     `json:"from"`
	RequireTLS  bool                       `json:"require_tls,omitempty"` // REQUIRETLS (RFC 8689)
	Recipients  []schema.OutboundRecipient `json:"recipients"`
}

func newQueueEntry(e schema.OutboundEntry) queueEntry {
	q := queueEntry{ID: e.ID.String(), Shard: e.Shard, Size: e.Size, Created: e.Created.UTC(), NextAttempt: e.NextAttempt.UTC(),
		Held: e.Held, Attempts: e.State.Attempts, Sender: e.State.Sender, From: e.State.From, RequireTLS: e.State.RequireTLS, Recipients: e.State.Recipients}
	if !e.Finished.IsZero() {
		f := e.Finished.UTC()
		q.Finished = &f
	}
	return q
}

// queueAdmin serves the queue endpoints and passes everything else to
// next.
func (n *Node) queueAdmin(next http.Handler, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathQueue, func(w http.ResponseWriter, r *http.Request) {
		entries, err := n.store.OutboundEntries(r.Context())
		if err != nil {
			writeBackupError(w, http.StatusServiceUnavailable, err)
			return
		}
		out := make([]queueEntry, 0, len(entries))
		for _, e := range entries {
			out = append(out, newQueueEntry(e))
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("GET "+pathQueue+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		e, status, err := n.findQueueEntry(r.Context(), r.PathValue("id"))
		if err != nil {
			writeBackupError(w, status, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(newQueueEntry(e))
	})
	mux.HandleFunc("POST "+pathQueue+"/{id}/{action}", func(w http.ResponseWriter, r *http.Request) {
		e, status, err := n.findQueueEntry(r.Context(), r.PathValue("id"))
		if err != nil {
			writeBackupError(w, status, err)
			return
		}
		action := r.PathValue("action")
		now := n.now()
		switch action {
		case "delete":
			err = n.store.DeleteOutbound(r.Context(), e.Shard, e.ID)
		case "retry", "hold", "release":
			e, err = n.store.ModifyOutbound(r.Context(), e.Shard, e.ID, func(c *schema.OutboundEntry) error {
				if !c.Finished.IsZero() {
					return errors.New("the message is finished: nothing left to deliver")
				}
				switch action {
				case "hold":
					c.Held = true
				case "release":
					c.Held = false
					c.NextAttempt = now
				case "retry":
					c.NextAttempt = now
				}
				return nil
			})
		default:
			writeBackupError(w, http.StatusNotFound, fmt.Errorf("unknown queue action %q", action))
			return
		}
		if err != nil {
			writeBackupError(w, http.StatusConflict, err)
			return
		}
		if action != "hold" && action != "delete" {
			n.outbound.Kick()
		}
		log.Info("admin request", "route", r.Pattern, "action", action, "id", e.ID.String())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(newQueueEntry(e))
	})
	mux.Handle("/", next)
	return mux
}

// findQueueEntry resolves an id argument; status is the HTTP status
// for its error.
func (n *Node) findQueueEntry(ctx context.Context, arg string) (schema.OutboundEntry, int, error) {
	id, err := schema.ParseID(arg)
	if err != nil {
		return schema.OutboundEntry{}, http.StatusBadRequest, fmt.Errorf("bad queue id %q", arg)
	}
	e, err := n.store.FindOutbound(ctx, id)
	switch {
	case errors.Is(err, schema.ErrNoSuchMessage):
		return e, http.StatusNotFound, fmt.Errorf("no queued message %s", arg)
	case err != nil:
		return e, http.StatusServiceUnavailable, err
	}
	return e, http.StatusOK, nil
}

// queueCommand is "mailnode queue list|show|retry|hold|release|delete".
func (c CLI) queueCommand(ctx context.Context, args []string) error {
	a, err := parseAdminCommand("queue", []string{"list", "show", "retry", "hold", "release", "delete"}, args)
	if err != nil {
		return err
	}
	sub, pos := a.sub, a.args
	if sub == "list" && len(pos) != 0 {
		return fmt.Errorf("%w: queue list takes no arguments", errUsage)
	}
	if sub != "list" && len(pos) != 1 {
		return fmt.Errorf("%w: queue %s takes one queue id", errUsage, sub)
	}
	if sub == "list" {
		var list []queueEntry
		if err := a.call(ctx, http.MethodGet, pathQueue, nil, 64<<20, &list); err != nil {
			return err
		}
		if a.asJSON {
			return writeJSON(c.Stdout, list)
		}
		if len(list) == 0 {
			fmt.Fprintln(c.Stdout, "queue is empty")
			return nil
		}
		tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tAGE\tSIZE\tSTATE\tNEXT\tFROM\tRECIPIENTS")
		for _, e := range list {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", e.ID, time.Since(e.Created).Round(time.Second), e.Size, entryState(e),
				nextAttempt(e), e.From, recipientSummary(e.Recipients))
		}
		return tw.Flush()
	}
	var e queueEntry
	if sub == "show" {
		err = a.call(ctx, http.MethodGet, pathQueue+"/"+pos[0], nil, 64<<20, &e)
	} else {
		err = a.call(ctx, http.MethodPost, pathQueue+"/"+pos[0]+"/"+sub, []byte("{}"), 64<<20, &e)
	}
	if err != nil {
		return err
	}
	if a.asJSON {
		return writeJSON(c.Stdout, e)
	}
	if sub != "show" {
		fmt.Fprintf(c.Stdout, "%s: %s\n", e.ID, map[string]string{"retry": "delivery attempt due now", "hold": "held",
			"release": "released, delivery attempt due now", "delete": "deleted"}[sub])
		return nil
	}
	fmt.Fprintf(c.Stdout, "id:         %s (shard %d)\n", e.ID, e.Shard)
	fmt.Fprintf(c.Stdout, "sender:     %s\nfrom:       <%s>\nsize:       %d\n", e.Sender, e.From, e.Size)
	fmt.Fprintf(c.Stdout, "queued:     %s\nattempts:   %d\nstate:      %s\nnext:       %s\n", e.Created.Format(time.RFC3339), e.Attempts, entryState(e), nextAttempt(e))
	tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RECIPIENT\tSTATUS\tREMOTE\tLAST REPLY")
	for _, r := range e.Recipients {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Address, r.Status, r.Remote, r.Reply)
	}
	return tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func entryState(e queueEntry) string {
	switch {
	case e.Finished != nil:
		return "finished"
	case e.Held:
		return "held"
	default:
		return "queued"
	}
}

func nextAttempt(e queueEntry) string {
	if e.Finished != nil || e.Held {
		return "-"
	}
	if d := time.Until(e.NextAttempt); d > 0 {
		return "in " + d.Round(time.Second).String()
	}
	return "now"
}

func recipientSummary(rs []schema.OutboundRecipient) string {
	count := map[schema.RecipientStatus]int{}
	for _, r := range rs {
		count[r.Status]++
	}
	var parts []string
	for _, st := range []schema.RecipientStatus{schema.RecipientQueued, schema.RecipientDelivered, schema.RecipientFailed, schema.RecipientExpired} {
		if count[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", count[st], st))
		}
	}
	return strings.Join(parts, ", ")
}
