// Package adminweb is the node's web status and admin page, served at
// /admin/ of the HTTPS listener: server-rendered HTML from embedded
// templates and one embedded style sheet, no script at all (the charts
// are SVG drawn on the server), so it works offline and under a strict
// Content-Security-Policy.
//
// It holds no admin logic of its own: every read and every change goes
// through the admin API (the handler of the admin socket) in-process, as
// the identity of the admin token the session was opened with, so the
// page, the CLI and the HTTPS API share one implementation and one audit
// log.
//
// Invariants:
//   - A session is opened only with a valid admin token, lives in this
//     node's memory only, and ends after IdleTimeout without a request,
//     after MaxAge in all, at logout, or when its token is revoked.
//   - Its cookie is HttpOnly, Secure, SameSite=Strict and __Host-
//     prefixed.
//   - Every POST carries the session's CSRF token in a hidden field and,
//     when the browser sends them, an Origin of this host and a
//     Sec-Fetch-Site of same-origin; otherwise it is refused with 403.
//   - Every answer carries the security headers of Secure (CSP without
//     inline script or style, HSTS, nosniff, same-origin referrers, no framing)
//     and no CORS header.
//   - Tokens, passwords and session ids are never logged.
package adminweb
