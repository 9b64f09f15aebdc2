// Package autoconfig owns the documents mail clients fetch to configure
// an account by themselves, given only an address: Thunderbird's
// autoconfig (the Mozilla ISPDB clientConfig v1.1 format), Outlook's POX
// autodiscover (the 2006a "outlook" response schema) and an Apple
// configuration profile (.mobileconfig, com.apple.mail.managed payload);
// and the RFC 6186 / RFC 8314 DNS records that point clients at the
// same servers.
//
// Every document is generated from one Config: the host name clients
// connect to and the ports advertised for each service (the standard
// ones by default, which need not be the ports the node listens on when
// a NAT or proxy forwards them).
//
// Invariants:
//   - Only the address's domain is looked up (Domains), never the user:
//     the answer for an existing and a non-existing user of a served
//     domain is the same, so the endpoints cannot be used to probe for
//     accounts.
//   - Every value written into XML or a plist goes through encoding/xml,
//     so nothing from a request can change a document's structure;
//     addresses are validated by schema.CanonicalAddress first.
//   - Input is bounded: an autodiscover request body is at most
//     MaxRequestBytes; bad input gets 400 (413 for a body over the limit)
//     and never a panic.
//   - Only implicit TLS and STARTTLS are advertised, never plaintext, and
//     the login is always the full address with a password over TLS.
//   - Addresses are logged only at debug level.
package autoconfig
