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
	"text/tabwriter"
	"time"
)

// pathScrub is the admin endpoint of the scrubs: GET says how the last
// went and whether one runs, POST starts one now.
const pathScrub = "/v1/scrub"

// scrubStatus is what `mailnode scrub status` shows.
type scrubStatus struct {
	// Off says scrubs are turned off (scrub.every negative).
	Off bool `json:"off,omitempty"`
	// Starting says the node has not started its scrubber yet: its
	// stores are still opening.
	Starting bool          `json:"starting,omitempty"`
	Every    time.Duration `json:"every_ns,omitempty"`
	Rate     int64         `json:"rate_bytes,omitempty"`
	Running  bool          `json:"running"`
	// Last is the last scrub that read every replica to the end, if any.
	Last *scrubState `json:"last,omitempty"`
}

// scrubStatus reports the node's scrubs.
func (n *Node) scrubStatus() scrubStatus {
	s := n.scrubs.Load()
	if s == nil {
		return scrubStatus{Off: n.cfg.Scrub.Every < 0, Starting: n.cfg.Scrub.Every >= 0}
	}
	st := scrubStatus{Every: s.every, Rate: s.rate, Running: s.running.Load()}
	if last := s.last(); !last.Ended.IsZero() {
		st.Last = &last
	}
	return st
}

// scrubAdmin serves pathScrub in front of next.
func (n *Node) scrubAdmin(next http.Handler, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathScrub, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(n.scrubStatus())
	})
	mux.HandleFunc("POST "+pathScrub, func(w http.ResponseWriter, r *http.Request) {
		s := n.scrubs.Load()
		if s == nil {
			if n.cfg.Scrub.Every >= 0 {
				writeBackupError(w, http.StatusServiceUnavailable, errors.New("the node is still starting: try again in a moment"))
				return
			}
			writeBackupError(w, http.StatusConflict, errors.New("scrubs are off (scrub.every is negative)"))
			return
		}
		if err := s.start(); err != nil {
			writeBackupError(w, http.StatusConflict, err)
			return
		}
		log.Info("admin request", "route", r.Pattern)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(n.scrubStatus())
	})
	mux.Handle("/", next)
	return mux
}

// scrubCommand runs `mailnode scrub start|status`.
func (c CLI) scrubCommand(ctx context.Context, args []string) error {
	a, err := parseAdminCommand("scrub", []string{"start", "status"}, args)
	if err != nil {
		return err
	}
	if len(a.args) != 0 {
		return fmt.Errorf("%w: scrub %s takes no arguments", errUsage, a.sub)
	}
	method, body := http.MethodGet, []byte(nil)
	if a.sub == "start" {
		method, body = http.MethodPost, []byte("{}")
	}
	var st scrubStatus
	if err := a.call(ctx, method, pathScrub, body, 16<<20, &st); err != nil {
		return err
	}
	if a.asJSON {
		return writeJSON(c.Stdout, st)
	}
	if a.sub == "start" {
		fmt.Fprintln(c.Stdout, "scrub started; `mailnode scrub status` shows it once it ends, the log as it goes")
		return nil
	}
	return writeScrubStatus(c.Stdout, st)
}

// writeScrubStatus prints a scrub status for people.
func writeScrubStatus(w io.Writer, st scrubStatus) error {
	if st.Off {
		_, err := fmt.Fprintln(w, "scrubs are off (scrub.every is negative)")
		return err
	}
	if st.Starting {
		_, err := fmt.Fprintln(w, "the node is still starting; its scrubs start with it")
		return err
	}
	state := "idle"
	if st.Running {
		state = "running"
	}
	fmt.Fprintf(w, "scrub every %s at %d bytes/s: %s\n", st.Every, st.Rate, state)
	if st.Last == nil {
		_, err := fmt.Fprintln(w, "no scrub has ended yet")
		return err
	}
	fmt.Fprintf(w, "last ended %s\n", st.Last.Ended.Format(time.RFC3339))
	if st.Last.Incomplete {
		fmt.Fprintf(w, "incomplete: a replica could not be read (ERROR below); the next scrub comes within %s\n", scrubRetry)
	}
	fmt.Fprintln(w)
	shards := make([]uint32, 0, len(st.Last.Shards))
	for n := range st.Last.Shards {
		shards = append(shards, n)
	}
	sort.Slice(shards, func(i, j int) bool { return shards[i] < shards[j] })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tUSERS\tMESSAGES\tRECORDS\tQUEUED\tBYTES\tDAMAGED\tUNREADABLE\tERROR")
	for _, n := range shards {
		o := st.Last.Shards[n]
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", n, o.Users, o.Blobs, o.Records, o.Queued, o.Bytes, o.Damaged, o.Unreadable, o.Err)
	}
	return tw.Flush()
}
