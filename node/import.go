package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/mailcluster/mailcluster/node/mailimport"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// pathImport is the admin endpoint that runs an import on the node.
const pathImport = "/v1/import"

// maxImportRequest bounds the JSON body of an import request.
const maxImportRequest = 64 << 10

const importUsage = `
Importing mail:
  mailnode import imap --from imaps://HOST[:PORT] --user NAME [--password-file F] [--ca-file F] --to USER[/MAILBOX]
  mailnode import maildir PATH --to USER[/MAILBOX]
  mailnode import mbox PATH --to USER[/MAILBOX]
    (all take --data DIR or --config FILE). Every mailbox comes over with
    flags, internal dates and subscriptions (imap://HOST uses STARTTLS);
    PATH is read by the node. Running it again copies only what is
    missing. The source password is read without echo from a terminal,
    or as one line from a pipe, unless --password-file names a file.
`

// importRequest is what the CLI asks the node to import.
type importRequest struct {
	Kind     string `json:"kind"`   // imap, maildir or mbox
	Source   string `json:"source"` // URL or path
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	CAFile   string `json:"ca_file,omitempty"`
	To       string `json:"to"` // USER[/MAILBOX]
}

// importAdmin serves the import endpoint and passes everything else to
// next.
func (n *Node) importAdmin(next http.Handler, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+pathImport, func(w http.ResponseWriter, r *http.Request) {
		var req importRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, maxImportRequest))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeBackupError(w, http.StatusBadRequest, fmt.Errorf("bad import request: %v", err))
			return
		}
		start := time.Now()
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		ew := &eventWriter{w: w}
		var progress func(mailimport.Progress)
		if r.URL.Query().Get("progress") == "1" {
			progress = importProgress(ew)
		}
		sum, err := n.runImport(r.Context(), req, progress)
		ev := backupEvent{}
		if err == nil {
			ev.Result, err = json.Marshal(sum)
		}
		if err != nil {
			ev.Error = err.Error()
		}
		ew.send(ev)
		// The source, the user and the password stay out of the log.
		log.Info("admin request", "route", r.Pattern, "kind", req.Kind, "ok", err == nil,
			"copied", sum.Copied, "skipped", sum.Skipped, "failed", sum.Failed, "duration", time.Since(start).Round(time.Millisecond))
	})
	mux.Handle("/", next)
	return mux
}

// importProgress draws a progress line at most every half second.
func importProgress(ew *eventWriter) func(mailimport.Progress) {
	var last time.Time
	return func(p mailimport.Progress) {
		if !p.MailboxFinished && time.Since(last) < 500*time.Millisecond {
			return
		}
		last = time.Now()
		line := fmt.Sprintf("import: mailbox %d/%d %s: %d copied, %d already there, %d failed, %s",
			p.Done+1, p.Mailboxes, p.Mailbox, p.Copied, p.Skipped, p.Failed, formatImportBytes(p.Bytes))
		if p.MailboxFinished {
			line = fmt.Sprintf("import: %d/%d mailboxes done: %d copied, %d already there, %d failed, %s",
				p.Done, p.Mailboxes, p.Copied, p.Skipped, p.Failed, formatImportBytes(p.Bytes))
		}
		ew.send(backupEvent{Progress: line})
	}
}

func formatImportBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
}

// runImport opens the source and the target account and copies.
func (n *Node) runImport(ctx context.Context, req importRequest, progress func(mailimport.Progress)) (mailimport.Summary, error) {
	user, into, _ := strings.Cut(req.To, "/")
	if into != "" {
		if _, err := schema.CanonicalNewMailbox(into); err != nil {
			return mailimport.Summary{}, fmt.Errorf("--to %q: %w", req.To, err)
		}
	}
	if n.store == nil {
		return mailimport.Summary{}, errors.New("the node is not serving yet")
	}
	acct, err := n.store.AccountOf(ctx, user)
	if err != nil {
		return mailimport.Summary{}, fmt.Errorf("--to %q: %w", req.To, err)
	}
	defer acct.Close()
	var src mailimport.Source
	switch req.Kind {
	case "imap":
		var tlsCfg *tls.Config
		if req.CAFile != "" {
			pem, _, err := readSmallFile(req.CAFile, 1<<20)
			if err != nil {
				return mailimport.Summary{}, fmt.Errorf("--ca-file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return mailimport.Summary{}, fmt.Errorf("--ca-file %s: no PEM certificate", req.CAFile)
			}
			tlsCfg = &tls.Config{RootCAs: pool}
		}
		src, err = mailimport.DialIMAP(ctx, req.Source, req.User, req.Password, tlsCfg)
		if err != nil {
			return mailimport.Summary{}, err
		}
	case "maildir":
		src = &mailimport.Maildir{Root: req.Source}
	case "mbox":
		src = &mailimport.Mbox{Path: req.Source, Name: strings.TrimSuffix(filepath.Base(req.Source), filepath.Ext(req.Source))}
		if into == "" {
			into = "INBOX"
		}
	default:
		return mailimport.Summary{}, fmt.Errorf("import kind %q: want imap, maildir or mbox", req.Kind)
	}
	defer src.Close()
	return mailimport.Run(ctx, src, acct, mailimport.Options{Into: into, Progress: progress})
}

// importCommand is "mailnode import KIND ...".
func (c CLI) importCommand(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: import needs imap, maildir or mbox", errUsage)
	}
	kind := args[0]
	fs := newFlagSet("import " + kind)
	data := fs.String("data", "", "data directory of the node")
	config := fs.String("config", "", "config file")
	to := fs.String("to", "", "USER[/MAILBOX]")
	from := fs.String("from", "", "imaps://HOST[:PORT] or imap://HOST[:PORT]")
	user := fs.String("user", "", "user name on the source server")
	passwordFile := fs.String("password-file", "", "file holding the source password")
	caFile := fs.String("ca-file", "", "PEM certificates to trust for the source server")
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	req := importRequest{Kind: kind, To: *to}
	switch kind {
	case "imap":
		if len(pos) != 0 || *from == "" || *user == "" {
			return fmt.Errorf("%w: import imap --from URL --user NAME --to USER[/MAILBOX]", errUsage)
		}
		req.Source, req.User = *from, *user
		if *caFile != "" {
			if req.CAFile, err = filepath.Abs(*caFile); err != nil {
				return err
			}
		}
		if req.Password, err = c.sourcePassword(*passwordFile, *user, *from); err != nil {
			return err
		}
	case "maildir", "mbox":
		if len(pos) != 1 {
			return fmt.Errorf("%w: import %s PATH --to USER[/MAILBOX]", errUsage, kind)
		}
		// The node reads the path: make it absolute from here.
		if req.Source, err = filepath.Abs(pos[0]); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: import %q: want imap, maildir or mbox", errUsage, kind)
	}
	if req.To == "" {
		return fmt.Errorf("%w: import needs --to USER[/MAILBOX]", errUsage)
	}
	dir, err := dataDirArg("import", *data, *config)
	if err != nil {
		return err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	client := newBackupClient(dir)
	defer client.close()
	var sum mailimport.Summary
	if err := client.streamBody(ctx, pathImport, body, c.progressOut(), &sum); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	fmt.Fprintf(c.Stdout, "imported %d mailboxes: %d messages copied (%s), %d already there, %d failed\n",
		sum.Mailboxes, sum.Copied, formatImportBytes(sum.Bytes), sum.Skipped, sum.Failed)
	for _, e := range sum.Errors {
		fmt.Fprintf(c.Stdout, "failed: %s\n", e)
	}
	if sum.Failed > 0 {
		return fmt.Errorf("%d messages could not be imported", sum.Failed)
	}
	return nil
}

// sourcePassword reads the source server's password: from file, else
// without echo from a terminal, else one line from standard input.
func (c CLI) sourcePassword(file, user, from string) (string, error) {
	if file != "" {
		b, _, err := readSmallFile(file, maxPasswordInput+2)
		if err != nil {
			return "", fmt.Errorf("--password-file: %w", err)
		}
		return checkPasswordInput([]byte(strings.TrimRight(string(b), "\r\n")))
	}
	if f, ok := c.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(c.Stderr, "Password of %s on %s: ", user, from)
		p, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(c.Stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		defer clear(p)
		return checkPasswordInput(p)
	}
	return readPasswordLine(c.Stdin)
}
