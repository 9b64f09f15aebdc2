package directory

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Multi-factor authentication is a TOTP key (RFC 6238: SHA-1, six digits,
// 30-second steps, the authenticator apps' common ground) in the sealed
// user record. There is no web login yet, so the second factor guards
// nothing interactive: what MFA changes today is that IMAP, POP3 and SMTP,
// which cannot ask for a code, take only the user's app passwords. The
// recovery codes let an admin check that whoever asks to switch MFA off
// holds the account (`mailnode user mfa disable USER --recovery CODE`).

// The states of a user's MFA (UserInfo.MFA).
const (
	MFAOff = "off"
	// MFAPending: enrolled but not confirmed with a code; it has no effect
	// yet, so a user who never scanned the code is not locked out.
	MFAPending = "pending"
	MFAOn      = "on"
)

const (
	// RecoveryCodes is how many recovery codes an enrolment gives.
	RecoveryCodes = 10
	// Recovery codes are two groups of five characters of codeAlphabet:
	// 50 random bits, checked only by an admin's command.
	recoveryGroups = 2
	recoveryGroup  = 5
	recoveryLength = recoveryGroups * recoveryGroup
	// totpSecretSize is the TOTP key's size in bytes (RFC 4226 section 4
	// recommends 160 bits).
	totpSecretSize = 20
)

// totpOptions are the TOTP parameters: those of the otpauth:// URI
// totp.Generate writes, and one step of clock skew either way.
var totpOptions = totp.ValidateOpts{Period: 30, Skew: 1, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// domainMFAPrefix starts the meta setting that says, by a domain's opaque
// id, that its users must use MFA (the value mfaRequired); no setting
// means optional.
const (
	domainMFAPrefix = "domain_mfa/"
	mfaRequired     = "require"
)

func domainMFAKey(id schema.ID) string { return domainMFAPrefix + id.String() }

// mfaState is a user's TOTP enrolment in the sealed user record.
type mfaState struct {
	// Secret is the base32 TOTP key. It leaves the record only in the
	// enrolment's answer, once.
	Secret string `json:"s"`
	// Active is set by a confirmation with a valid code.
	Active bool `json:"a"`
	// Since is when it was enrolled, then when it was confirmed.
	Since int64 `json:"t"`
	// Recovery holds the argon2id hashes of the recovery codes.
	Recovery []string `json:"r,omitempty"`
}

func (u *userInfo) mfaActive() bool { return u.MFA != nil && u.MFA.Active }

func (u *userInfo) mfaStatus() string {
	switch {
	case u.MFA == nil:
		return MFAOff
	case u.MFA.Active:
		return MFAOn
	}
	return MFAPending
}

// MFAEnrollment is what an MFA enrolment hands out, once: the key for the
// authenticator app and the recovery codes. The directory keeps only the
// key (sealed) and the codes' hashes.
type MFAEnrollment struct {
	// URI is the otpauth:// URI (issuer: the node's hostname, account:
	// the address) an authenticator app reads, usually as a QR code.
	URI string `json:"uri"`
	// Secret is the key in base32, for typing it into an app.
	Secret string `json:"secret"`
	// RecoveryCodes each prove once, to an admin, that the user holds
	// the account.
	RecoveryCodes []string `json:"recovery_codes"`
}

// EnableMFA enrols a user in TOTP MFA. The enrolment stays pending, with
// no effect, until ConfirmMFA checks a code from the user's app; enabling
// again while pending starts over with a new key. A user whose MFA is on
// must disable it first.
func (d *Directory) EnableMFA(ctx context.Context, address string) (MFAEnrollment, error) {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return MFAEnrollment{}, err
	}
	_, info, err := d.lookupUser(ctx, addr)
	if err != nil {
		return MFAEnrollment{}, fmt.Errorf("enable MFA: %w", err)
	}
	if info.mfaActive() {
		return MFAEnrollment{}, errMFAOn
	}
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer: d.issuer, AccountName: addr, Period: totpOptions.Period, SecretSize: totpSecretSize,
		Digits: totpOptions.Digits, Algorithm: totpOptions.Algorithm, Rand: rand.Reader,
	})
	if err != nil {
		return MFAEnrollment{}, fmt.Errorf("enable MFA: generate a key: %w", err)
	}
	enr := MFAEnrollment{URI: key.URL(), Secret: key.Secret()}
	hashes := make([]string, 0, RecoveryCodes)
	for range RecoveryCodes {
		code := randomCode(recoveryGroups, recoveryGroup)
		norm, _ := normalizeCode(code, recoveryLength)
		h, err := d.hash.hash(ctx, norm)
		if err != nil {
			return MFAEnrollment{}, fmt.Errorf("enable MFA: %w", err)
		}
		enr.RecoveryCodes = append(enr.RecoveryCodes, code)
		hashes = append(hashes, h)
	}
	_, err = d.updateUser(ctx, addr, func(_ schema.UserRecord, info *userInfo) error {
		if info.mfaActive() {
			return errMFAOn
		}
		info.MFA = &mfaState{Secret: key.Secret(), Since: d.now().Unix(), Recovery: hashes}
		return nil
	})
	if err != nil {
		return MFAEnrollment{}, fmt.Errorf("enable MFA: %w", err)
	}
	d.log.Info("MFA enrolment started")
	return enr, nil
}

var errMFAOn = fmt.Errorf("MFA is already on for this user (disable it first): %w", schema.ErrInvalid)

// ConfirmMFA switches a pending enrolment on after checking a code of the
// user's authenticator app. From then on IMAP, POP3 and SMTP take only the
// user's app passwords.
func (d *Directory) ConfirmMFA(ctx context.Context, address, code string) error {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return err
	}
	if !validTOTPForm(code) {
		return fmt.Errorf("confirm MFA: a code has %d digits: %w", totpOptions.Digits.Length(), schema.ErrInvalid)
	}
	_, err = d.updateUser(ctx, addr, func(_ schema.UserRecord, info *userInfo) error {
		switch {
		case info.MFA == nil:
			return fmt.Errorf("the user has no MFA enrolment (run mfa enable first): %w", schema.ErrInvalid)
		case info.MFA.Active:
			return errMFAOn
		}
		ok, err := totp.ValidateCustom(code, info.MFA.Secret, d.now(), totpOptions)
		if err != nil || !ok {
			return fmt.Errorf("the code does not match (is the device's clock right?): %w", schema.ErrInvalid)
		}
		info.MFA.Active, info.MFA.Since = true, d.now().Unix()
		return nil
	})
	if err != nil {
		return fmt.Errorf("confirm MFA: %w", err)
	}
	d.log.Info("MFA confirmed")
	return nil
}

// validTOTPForm reports whether code is six ASCII digits.
func validTOTPForm(code string) bool {
	if len(code) != totpOptions.Digits.Length() {
		return false
	}
	for i := 0; i < len(code); i++ {
		if code[i] < '0' || code[i] > '9' {
			return false
		}
	}
	return true
}

// DisableMFA removes a user's MFA (pending or on) with its key and
// recovery codes; the account password logs in again (unless the domain
// requires MFA). With a non-empty recovery code it first checks that the
// code is one of the user's unused ones, so an admin can verify the
// person asking; the code is used up with the enrolment.
func (d *Directory) DisableMFA(ctx context.Context, address, recovery string) error {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return err
	}
	norm, isCode := "", true
	if recovery != "" {
		if norm, isCode = normalizeCode(recovery, recoveryLength); !isCode {
			return fmt.Errorf("disable MFA: a recovery code has %d letters and digits: %w", recoveryLength, schema.ErrInvalid)
		}
	}
	_, err = d.updateUser(ctx, addr, func(_ schema.UserRecord, info *userInfo) error {
		if info.MFA == nil {
			return fmt.Errorf("MFA is not enabled for this user: %w", schema.ErrInvalid)
		}
		if recovery != "" {
			found := false
			for _, h := range info.MFA.Recovery {
				ok, err := d.hash.verify(ctx, h, norm)
				if err != nil {
					return err
				}
				if ok {
					found = true
					break
				}
			}
			if !found {
				return fmt.Errorf("the recovery code does not match one of the user's: %w", schema.ErrInvalid)
			}
		}
		info.MFA = nil
		return nil
	})
	if err != nil {
		return fmt.Errorf("disable MFA: %w", err)
	}
	d.log.Info("MFA disabled", "recovery_code", recovery != "")
	return nil
}

// SetDomainMFA makes MFA required for a domain's users, or optional
// again. While it is required, IMAP, POP3 and SMTP take only app
// passwords from every user of the domain, enrolled in MFA or not.
func (d *Directory) SetDomainMFA(ctx context.Context, domain string, require bool) error {
	dn, err := schema.CanonicalDomain(domain)
	if err != nil {
		return err
	}
	rec, _, err := d.findDomain(ctx, dn)
	if err != nil {
		return fmt.Errorf("set domain MFA: %w", err)
	}
	var v []byte
	if require {
		v = []byte(mfaRequired)
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: domainMFAKey(rec.ID), Value: v}); err != nil {
		return fmt.Errorf("set domain MFA: %w", err)
	}
	d.log.Info("domain MFA policy set", "require", require)
	return nil
}

// domainRequiresMFA reports whether a domain requires MFA; when its
// setting cannot be read it says yes (refusing the account password is
// the safe mistake).
func (d *Directory) domainRequiresMFA(domain schema.ID) bool {
	v, err := d.setting(domainMFAKey(domain))
	return err != nil || string(v) == mfaRequired
}
