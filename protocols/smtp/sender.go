package smtp

import (
	"context"
	"errors"
	"net/mail"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// sendsOut reports whether a recipient the store does not know (err from
// LookupRecipient) goes to the outbound queue: on submission with
// Config.Outbound, for a domain not served here.
func (s *session) sendsOut(err error) bool {
	return s.srv.cfg.Mode == ModeSubmission && s.srv.cfg.Outbound != nil &&
		(errors.Is(err, schema.ErrNotLocal) || errors.Is(err, schema.ErrNoSuchDomain))
}

// checkSender refuses a sender address the authenticated user does not
// own: without Config.Outbound only their address and its
// plus-addresses, with it also their aliases (asked of the store).
func (s *session) checkSender(user, addr string) *protocols.Error {
	if ownAddress(addr, user) {
		return nil
	}
	if s.srv.cfg.Outbound != nil {
		ctx, cancel := context.WithTimeout(s.srv.ctx, s.srv.cfg.StoreTimeout)
		defer cancel()
		owns, err := s.srv.cfg.Outbound.SendsAs(ctx, user, addr)
		switch {
		case err == nil && owns:
			return nil
		case err != nil && !errors.Is(err, schema.ErrInvalid) && !errors.Is(err, schema.ErrNoSuchUser):
			return protocols.Temporaryf(451, [3]int{4, 3, 0}, err, "Temporary failure, try again later")
		}
	}
	return protocols.Permanentf(553, [3]int{5, 7, 1}, nil, "Sender address must be one of your own addresses <%s>", user)
}

// checkHeaderFrom refuses a message whose From: field names an address
// the user does not own (RFC 6409 section 8.1 lets a submission server
// check this). A message without a From: field is left to the recipient.
func (s *session) checkHeaderFrom(user, from string) *protocols.Error {
	if from == "" {
		return nil
	}
	list, err := mail.ParseAddressList(from)
	if err != nil {
		return protocols.Permanentf(553, [3]int{5, 7, 1}, err, "The From: field does not parse as addresses")
	}
	for _, a := range list {
		if e := s.checkSender(user, a.Address); e != nil {
			if e.Temporary {
				return e
			}
			return protocols.Permanentf(553, [3]int{5, 7, 1}, nil, "The From: field must name only your own addresses")
		}
	}
	return nil
}

// needsSMTPUTF8 reports whether a message must go out with SMTPUTF8
// (RFC 6531): a non-ASCII envelope address, or UTF-8 in the header
// section (RFC 6532). A client that asked for SMTPUTF8 for a message
// that needs none sends it on without: servers that lack the extension
// still take it.
func needsSMTPUTF8(from string, rcpts []string, msg []byte) bool {
	return !isASCII(from) || !allASCII(rcpts) || !isASCII(string(msg[:schema.HeaderLength(msg)]))
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func allASCII(ss []string) bool {
	for _, s := range ss {
		if !isASCII(s) {
			return false
		}
	}
	return true
}
