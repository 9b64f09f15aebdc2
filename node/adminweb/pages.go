package adminweb

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"image/png"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/pquerna/otp"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/backup"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/node/admin"
)

// backupListing is the part of the admin API's backup list the page
// shows.
type backupListing struct {
	Targets []struct {
		Region   string `json:"region"`
		Location string `json:"location"`
		Complete int    `json:"complete"`
		Partial  int    `json:"partial"`
		Bytes    int64  `json:"bytes"`
	} `json:"targets"`
	Backups []struct {
		ID           string               `json:"id"`
		Created      time.Time            `json:"created"`
		Complete     bool                 `json:"complete"`
		Shards       int                  `json:"shards"`
		Messages     int                  `json:"messages"`
		Size         int64                `json:"size"`
		Regions      []string             `json:"regions"`
		Verification *backup.Verification `json:"verification"`
		Problem      string               `json:"problem"`
	} `json:"backups"`
	Unreachable map[string]string    `json:"unreachable"`
	LastDrill   *backup.Verification `json:"last_drill"`
}

// regionRow summarises one region.
type regionRow struct {
	Name   string
	Nodes  int
	Up     int
	Shards int // mail shards homed there
}

type statusData struct {
	Node       admin.Status
	NodeErr    string
	Cluster    cluster.Status
	ClusterErr string
	Regions    []regionRow
	Backups    backupListing
	BackupErr  string
	// RPO is the age of the newest complete backup (0: none).
	RPO    time.Duration
	Charts []chart
}

func (s *Server) statusPage(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx, id := r.Context(), who(r, sess)
	var d statusData
	if err := s.cfg.API.Call(ctx, id, http.MethodGet, "/v1/status", nil, &d.Node); err != nil {
		d.NodeErr = err.Error()
	}
	if err := s.cfg.API.Call(ctx, id, http.MethodGet, "/v1/cluster", nil, &d.Cluster); err != nil {
		d.ClusterErr = err.Error()
	}
	d.Regions = regions(d.Cluster)
	if err := s.cfg.API.Call(ctx, id, http.MethodGet, "/v1/backup/list", nil, &d.Backups); err != nil {
		d.BackupErr = err.Error()
	}
	sort.Slice(d.Backups.Backups, func(i, j int) bool { return d.Backups.Backups[i].Created.After(d.Backups.Backups[j].Created) })
	for _, b := range d.Backups.Backups {
		if b.Complete {
			d.RPO = s.cfg.Now().Sub(b.Created)
			break
		}
	}
	if len(d.Backups.Backups) > 5 {
		d.Backups.Backups = d.Backups.Backups[:5]
	}
	d.Charts = charts(s.cfg.Rates())
	s.render(w, "status", http.StatusOK, func() view { v := s.sessionView(sess, "Status"); v.Data = d; return v }())
}

// regions counts the nodes and homed mail shards of each region.
func regions(st cluster.Status) []regionRow {
	by := map[string]*regionRow{}
	row := func(name string) *regionRow {
		if name == "" {
			name = "(none)"
		}
		if by[name] == nil {
			by[name] = &regionRow{Name: name}
		}
		return by[name]
	}
	for _, n := range st.Nodes {
		if n.Health == "removed" {
			continue
		}
		r := row(n.Region)
		r.Nodes++
		if n.Health == "up" {
			r.Up++
		}
	}
	for _, sh := range st.Shards {
		if sh.Home != "" {
			row(sh.Home).Shards++
		}
	}
	out := make([]regionRow, 0, len(by))
	for _, r := range by {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

type domainsData struct {
	Domains []directory.Domain
	Err     string
	// Form holds what was typed, shown again after a refusal.
	Form struct{ Name, KeyMode, Region string }
}

func (s *Server) domainsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	var d domainsData
	if err := s.cfg.API.Call(r.Context(), who(r, sess), http.MethodGet, "/v1/domains", nil, &d.Domains); err != nil {
		d.Err = err.Error()
	}
	v := s.sessionView(sess, "Domains")
	v.Data = d
	s.render(w, "domains", http.StatusOK, v)
}

func (s *Server) addDomain(w http.ResponseWriter, r *http.Request, sess *session) {
	name := strings.TrimSpace(r.PostForm.Get("name"))
	in := map[string]string{"name": name}
	if m := r.PostForm.Get("key_mode"); m != "" {
		in["key_mode"] = m
	}
	if reg := strings.TrimSpace(r.PostForm.Get("region")); reg != "" {
		in["region"] = reg
	}
	if err := s.cfg.API.Call(r.Context(), who(r, sess), http.MethodPost, "/v1/domains", in, nil); err != nil {
		s.redirect(w, r, sess, Prefix+"domains", "Domain not added: "+errText(err), true)
		return
	}
	s.redirect(w, r, sess, Prefix+"domains", fmt.Sprintf("Domain %s added.", name), false)
}

type usersData struct {
	Domains []directory.Domain
	Domain  string
	Users   []directory.UserInfo
	// More counts the users listed beyond maxUserDetails, by address only.
	More []string
	Err  string
}

// maxUserDetails bounds the users shown with their details (one API call
// each); the rest are listed by address.
const maxUserDetails = 200

func (s *Server) usersPage(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx, id := r.Context(), who(r, sess)
	d := usersData{Domain: r.URL.Query().Get("domain")}
	if err := s.cfg.API.Call(ctx, id, http.MethodGet, "/v1/domains", nil, &d.Domains); err != nil {
		d.Err = err.Error()
	}
	var users struct {
		Users []string `json:"users"`
	}
	path := "/v1/users"
	if d.Domain != "" {
		path = pathWithQuery(path, url.Values{"domain": {d.Domain}})
	}
	if err := s.cfg.API.Call(ctx, id, http.MethodGet, path, nil, &users); err != nil {
		d.Err = err.Error()
	}
	sort.Strings(users.Users)
	for i, addr := range users.Users {
		if i >= maxUserDetails {
			d.More = users.Users[i:]
			break
		}
		info := directory.UserInfo{Address: addr}
		if err := s.cfg.API.Call(ctx, id, http.MethodGet, "/v1/users/"+url.PathEscape(addr), nil, &info); err != nil {
			info.MFA = "?"
		}
		d.Users = append(d.Users, info)
	}
	v := s.sessionView(sess, "Users")
	v.Data = d
	s.render(w, "users", http.StatusOK, v)
}

// addUser creates a user; the password travels only in the API call's
// body, never in a log or the page.
func (s *Server) addUser(w http.ResponseWriter, r *http.Request, sess *session) {
	address := strings.TrimSpace(r.PostForm.Get("address"))
	in := map[string]string{"address": address, "password": r.PostForm.Get("password")}
	back := Prefix + "users"
	if _, dom, ok := strings.Cut(address, "@"); ok {
		back = pathWithQuery(back, url.Values{"domain": {strings.ToLower(dom)}})
	}
	if err := s.cfg.API.Call(r.Context(), who(r, sess), http.MethodPost, "/v1/users", in, nil); err != nil {
		s.redirect(w, r, sess, back, "User not added: "+errText(err), true)
		return
	}
	s.redirect(w, r, sess, back, fmt.Sprintf("User %s added.", address), false)
}

// errText is what the page says of a failed call.
func errText(err error) string {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Message
	}
	return "the node could not do it (see its log)"
}

// since formats how long ago t was.
func (s *Server) since(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return humanDuration(s.cfg.Now().Sub(t)) + " ago"
}

func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

func humanSeconds(sec float64) string {
	return humanDuration(time.Duration(sec * float64(time.Second)))
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// mfaData is the MFA enrolment page: what the user's authenticator app
// needs, shown this once.
type mfaData struct {
	Address       string
	Secret        string
	RecoveryCodes []string
	// QR is the otpauth:// URI as a PNG QR code, in a data: URL (the
	// page's CSP allows data: images, nothing else from outside).
	QR     template.URL
	QRSize int
}

// qrSize is the QR code's width and height in pixels.
const qrSize = 256

// enrolMFA starts a user's TOTP enrolment and shows the QR code, the key
// and the recovery codes, with the form that confirms it. The secret
// lives only in this answer (no-store) and in the directory, sealed.
func (s *Server) enrolMFA(w http.ResponseWriter, r *http.Request, sess *session) {
	address := strings.TrimSpace(r.PostForm.Get("address"))
	back := Prefix + "users"
	if _, dom, ok := strings.Cut(address, "@"); ok {
		back = pathWithQuery(back, url.Values{"domain": {strings.ToLower(dom)}})
	}
	var enr directory.MFAEnrollment
	if err := s.cfg.API.Call(r.Context(), who(r, sess), http.MethodPost, "/v1/users/"+url.PathEscape(address)+"/mfa", nil, &enr); err != nil {
		s.redirect(w, r, sess, back, "MFA not started: "+errText(err), true)
		return
	}
	qr, err := qrDataURL(enr.URI)
	if err != nil {
		s.log.Error("MFA QR code", "err", err)
		s.redirect(w, r, sess, back, "MFA started, but the QR code could not be drawn: use the CLI (mailnode user mfa enable)", true)
		return
	}
	v := s.sessionView(sess, "MFA")
	v.Data = mfaData{Address: address, Secret: enr.Secret, RecoveryCodes: enr.RecoveryCodes, QR: qr, QRSize: qrSize}
	s.render(w, "mfa", http.StatusOK, v)
}

// qrDataURL draws uri as a PNG QR code in a data: URL.
func qrDataURL(uri string) (template.URL, error) {
	key, err := otp.NewKeyFromURL(uri)
	if err != nil {
		return "", fmt.Errorf("otpauth URI: %w", err)
	}
	img, err := key.Image(qrSize, qrSize)
	if err != nil {
		return "", fmt.Errorf("draw QR code: %w", err)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		return "", fmt.Errorf("encode QR code: %w", err)
	}
	// The URL is ours, made of base64 only: safe to put in src.
	return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(b.Bytes())), nil
}

// confirmMFA switches a pending enrolment on with a code from the app.
func (s *Server) confirmMFA(w http.ResponseWriter, r *http.Request, sess *session) {
	address := strings.TrimSpace(r.PostForm.Get("address"))
	back := Prefix + "users"
	if _, dom, ok := strings.Cut(address, "@"); ok {
		back = pathWithQuery(back, url.Values{"domain": {strings.ToLower(dom)}})
	}
	in := map[string]string{"code": strings.TrimSpace(r.PostForm.Get("code"))}
	if err := s.cfg.API.Call(r.Context(), who(r, sess), http.MethodPost, "/v1/users/"+url.PathEscape(address)+"/mfa/confirm", in, nil); err != nil {
		s.redirect(w, r, sess, back, "MFA not switched on: "+errText(err), true)
		return
	}
	s.redirect(w, r, sess, back, fmt.Sprintf("MFA is on for %s.", address), false)
}

// quotaText shows a user's storage usage and quota: "1.2 MiB of 2.0 GiB",
// "unlimited" without a limit, "(default)" when it is the cluster's.
func quotaText(u directory.UserInfo) string {
	used := "?"
	if u.Usage != nil {
		used = humanBytes(int64(min(*u.Usage, 1<<62)))
	}
	limit := "unlimited"
	if u.Quota != 0 {
		limit = humanBytes(int64(min(u.Quota, 1<<62)))
	}
	s := used + " of " + limit
	if u.QuotaDefault {
		s += " (default)"
	}
	return s
}
