// Package corpus generates the benchmark's message corpus: realistic
// RFC 5322 messages, a pure function of a seed, so that every target of a
// run (and every later run with the same seed) receives exactly the same
// bytes.
//
// What it models: sizes from 1 KiB to 5 MiB with a long-tailed
// distribution (most mail is a few KiB of text, a minority carries
// attachments of hundreds of KiB, a few reach the cap); plain-text,
// multipart/alternative and multipart/mixed messages with attachments of
// compressible and incompressible kinds; UTF-8 display names and subjects
// (RFC 2047 encoded words) and UTF-8 bodies (quoted-printable); threads
// (In-Reply-To and References to earlier messages of the same recipient).
//
// Invariants:
//   - Generate with the same Config returns byte-identical messages.
//   - Every message has CRLF line endings, lines shorter than 998 octets,
//     only 7-bit octets, and a size within [Config.MinSize, Config.MaxSize].
//   - The first header line of every message is "X-Mailbench-Id: <tag>",
//     unique in the corpus, so that a copy fetched back from a server can
//     be matched to its original even after trace headers were prepended.
package corpus
