package directory_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestMFA: an enrolment gives an otpauth:// URI and ten recovery codes and
// changes nothing until a code from the app confirms it; then the account
// password fails like a wrong one on every protocol while app passwords
// work; a recovery code is checked before MFA is disabled, and none of
// the secrets reaches the logs.
func TestMFA(t *testing.T) {
	log, logs := debugLogs()
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, MailShards: 1, Replicas: 1, Logger: log})
	const addr, account = "mia@example.test", "account-password"
	c.AddUser(addr, account)
	ctx := testCtx(t)
	n := c.Nodes[0]
	d := n.Directory()
	app, err := d.AddAppPassword(ctx, addr, "phone", nil)
	if err != nil {
		t.Fatal(err)
	}
	status := func() string {
		t.Helper()
		u, err := d.User(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		return u.MFA
	}
	if s := status(); s != directory.MFAOff {
		t.Fatalf("MFA %q before enrolment", s)
	}

	enr, err := d.EnableMFA(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(enr.URI)
	if err != nil || u.Scheme != "otpauth" || u.Host != "totp" || u.Query().Get("secret") != enr.Secret ||
		u.Query().Get("issuer") != "mailnode" || !strings.HasSuffix(u.Path, ":"+addr) {
		t.Fatalf("enrolment URI %q: %v", enr.URI, err)
	}
	seen := map[string]bool{}
	for _, code := range enr.RecoveryCodes {
		seen[code] = true
	}
	if len(enr.RecoveryCodes) != directory.RecoveryCodes || len(seen) != directory.RecoveryCodes {
		t.Fatalf("recovery codes %q", enr.RecoveryCodes)
	}
	// Pending: no effect yet.
	if s := status(); s != directory.MFAPending {
		t.Fatalf("MFA %q after enrolment", s)
	}
	if err := loginVia(ctx, n, addr, account, schema.ProtocolIMAP); err != nil {
		t.Fatalf("account password while MFA is pending: %v", err)
	}
	for _, bad := range []string{"12345", "abcdef", "1234567"} {
		if err := d.ConfirmMFA(ctx, addr, bad); !errors.Is(err, schema.ErrInvalid) {
			t.Errorf("confirm with %q: %v", bad, err)
		}
	}
	code, err := totp.GenerateCode(enr.Secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	if err := d.ConfirmMFA(ctx, addr, wrong); !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("confirm with a wrong code: %v", err)
	}
	if s := status(); s != directory.MFAPending {
		t.Fatalf("MFA %q after a wrong code", s)
	}
	if err := d.ConfirmMFA(ctx, addr, code); err != nil {
		t.Fatalf("confirm: %v", err)
	}
	if s := status(); s != directory.MFAOn {
		t.Fatalf("MFA %q after confirmation", s)
	}

	// On: the account password (verified and cached a moment ago) fails
	// everywhere like a wrong one; the app password works.
	for _, proto := range schema.LoginProtocols() {
		if err := loginVia(ctx, n, addr, account, proto); !errors.Is(err, schema.ErrAuthFailed) || err.Error() != schema.ErrAuthFailed.Error() {
			t.Errorf("account password with MFA over %s: %v, want what a wrong password gets", proto, err)
		}
		if err := loginVia(ctx, n, addr, app, proto); err != nil {
			t.Errorf("app password with MFA over %s: %v", proto, err)
		}
	}
	if _, err := d.EnableMFA(ctx, addr); !errors.Is(err, schema.ErrInvalid) {
		t.Errorf("enable MFA twice: %v", err)
	}

	// Disabling with a recovery code checks it first.
	for _, bad := range []string{"aaaaa-aaaaa", "not a code"} {
		if err := d.DisableMFA(ctx, addr, bad); !errors.Is(err, schema.ErrInvalid) {
			t.Errorf("disable with recovery code %q: %v", bad, err)
		}
	}
	if s := status(); s != directory.MFAOn {
		t.Fatalf("MFA %q after a wrong recovery code", s)
	}
	if err := d.DisableMFA(ctx, addr, strings.ToUpper(enr.RecoveryCodes[3])); err != nil {
		t.Fatalf("disable with a recovery code: %v", err)
	}
	if s := status(); s != directory.MFAOff {
		t.Fatalf("MFA %q after disabling", s)
	}
	if err := loginVia(ctx, n, addr, account, schema.ProtocolIMAP); err != nil {
		t.Fatalf("account password after MFA is off: %v", err)
	}
	// The codes went with the enrolment: a new one has new codes.
	enr2, err := d.EnableMFA(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.DisableMFA(ctx, addr, enr.RecoveryCodes[4]); !errors.Is(err, schema.ErrInvalid) {
		t.Errorf("an old recovery code after re-enrolment: %v", err)
	}
	if err := d.DisableMFA(ctx, addr, ""); err != nil {
		t.Errorf("disable without a recovery code: %v", err)
	}
	if err := d.DisableMFA(ctx, addr, ""); !errors.Is(err, schema.ErrInvalid) {
		t.Errorf("disable twice: %v", err)
	}

	for _, secret := range append([]string{enr.Secret, enr2.Secret, app, account}, enr.RecoveryCodes...) {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs hold a secret %q", secret)
		}
	}
}

// TestDomainRequiresMFA: a domain that requires MFA lets its users log in
// over IMAP, POP3 and SMTP with app passwords only, whether or not they
// enrolled, even with an account password verified (and cached) just
// before; other domains are not affected, and making it optional again
// restores the account password.
func TestDomainRequiresMFA(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, MailShards: 1, Replicas: 1})
	const addr, account = "bo@strict.test", "account-password"
	c.AddUser(addr, account)
	c.AddUser("cy@relaxed.test", account)
	ctx := testCtx(t)
	n := c.Nodes[0]
	d := n.Directory()
	app, err := d.AddAppPassword(ctx, addr, "client", []string{"imap", "smtp"})
	if err != nil {
		t.Fatal(err)
	}
	if err := loginVia(ctx, n, addr, account, schema.ProtocolIMAP); err != nil {
		t.Fatal(err)
	}
	if err := d.SetDomainMFA(ctx, "Strict.TEST", true); err != nil {
		t.Fatal(err)
	}
	for _, proto := range schema.LoginProtocols() {
		if err := loginVia(ctx, n, addr, account, proto); !errors.Is(err, schema.ErrAuthFailed) {
			t.Errorf("account password in a domain that requires MFA, over %s: %v", proto, err)
		}
	}
	if err := loginVia(ctx, n, addr, app, schema.ProtocolSMTP); err != nil {
		t.Errorf("app password in a domain that requires MFA: %v", err)
	}
	if err := loginVia(ctx, n, addr, app, schema.ProtocolPOP3); !errors.Is(err, schema.ErrAuthFailed) {
		t.Errorf("app password out of its scope: %v", err)
	}
	if err := loginVia(ctx, n, "cy@relaxed.test", account, schema.ProtocolIMAP); err != nil {
		t.Errorf("another domain's user: %v", err)
	}
	if u, err := d.User(ctx, addr); err != nil || !u.DomainRequiresMFA || u.MFA != directory.MFAOff {
		t.Errorf("user shows %+v, %v", u, err)
	}
	doms, err := d.Domains(ctx)
	if err != nil || len(doms) != 2 || doms[0].Name != "relaxed.test" || doms[0].RequireMFA || !doms[1].RequireMFA {
		t.Errorf("domains %+v, %v", doms, err)
	}

	if err := d.SetDomainMFA(ctx, "strict.test", false); err != nil {
		t.Fatal(err)
	}
	if err := loginVia(ctx, n, addr, account, schema.ProtocolPOP3); err != nil {
		t.Errorf("account password once MFA is optional again: %v", err)
	}
	if err := d.SetDomainMFA(ctx, "unknown.test", true); !errors.Is(err, schema.ErrNoSuchDomain) {
		t.Errorf("MFA policy of an unknown domain: %v", err)
	}
}
