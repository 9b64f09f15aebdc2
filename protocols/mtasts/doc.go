// Package mtasts implements SMTP MTA Strict Transport Security (RFC
// 8461) for both sides of a mail cluster: serving the policy of the
// domains we receive mail for, and, for outbound delivery, looking up,
// fetching, caching and answering the policies of the domains we send
// to.
//
// Invariants:
//   - Everything read from the network has a size limit: a policy body
//     64 KiB (RFC 8461 section 3.3), a policy's fields and mx patterns a
//     count, a TXT record a length. Malformed input is an error, never a
//     panic (see the fuzz targets).
//   - A policy is fetched only over HTTPS with a certificate valid for
//     mta-sts.DOMAIN, without following redirects, within a timeout, and
//     only a text/plain 200 answer counts.
//   - A cached policy is used until its max_age ends; a changed id in
//     the _mta-sts TXT record fetches it again, and a failed refresh keeps
//     the cached policy (RFC 8461 section 5.1). Without any valid policy
//     a sender proceeds as if the domain had none.
package mtasts
