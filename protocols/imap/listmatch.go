package imap

import (
	"strings"
)

// Limits on LIST patterns. Matching costs len(name) * len(pattern) steps
// per mailbox, so both the length and the number of patterns are bounded.
const (
	maxListPatternLen = 1024
	maxListPatterns   = 32
)

const delim = "/"

// listMatch reports whether mailbox name is matched by a LIST reference
// and pattern (RFC 3501 section 6.3.8): the reference is a literal prefix,
// "*" matches anything and "%" anything but the hierarchy delimiter. A
// pattern starting with the delimiter ignores the reference. "INBOX" is
// matched case-insensitively as the first level of a name.
func listMatch(name, ref, pattern string) bool {
	if strings.HasPrefix(pattern, delim) {
		ref = ""
		pattern = pattern[len(delim):]
	}
	name = normalizeInbox(name)
	if ref != "" {
		if !strings.HasSuffix(ref, delim) {
			ref += delim
		}
		ref = normalizeInbox(ref)
		if !strings.HasPrefix(name, ref) {
			return false
		}
		name = name[len(ref):]
	} else {
		pattern = normalizeInbox(pattern)
	}
	return globMatch(name, pattern)
}

// normalizeInbox upper-cases a leading "inbox" level, whatever its case.
func normalizeInbox(s string) string {
	if len(s) >= 5 && strings.EqualFold(s[:5], "INBOX") && (len(s) == 5 || s[5] == delim[0]) {
		return "INBOX" + s[5:]
	}
	return s
}

// globMatch matches name against a pattern of literal bytes and the "*"
// and "%" wildcards. It simulates the pattern as an automaton, keeping the
// set of pattern positions reachable after each byte of name, so it runs
// in O(len(name) * len(pattern)) time whatever the pattern; a backtracking
// matcher is exponential on patterns such as "*a*a*a*a*b".
func globMatch(name, pattern string) bool {
	n := len(pattern)
	cur := make([]bool, n+1)
	next := make([]bool, n+1)
	cur[0] = true
	closeOver(cur, pattern)
	for i := 0; i < len(name); i++ {
		c := name[i]
		alive := false
		for j := range next {
			next[j] = false
		}
		for j := 0; j < n; j++ {
			if !cur[j] {
				continue
			}
			switch p := pattern[j]; p {
			case '*':
				next[j] = true
			case '%':
				if c != delim[0] {
					next[j] = true
				}
			default:
				if p == c {
					next[j+1] = true
				}
			}
		}
		closeOver(next, pattern)
		for _, ok := range next {
			if ok {
				alive = true
				break
			}
		}
		if !alive {
			return false
		}
		cur, next = next, cur
	}
	return cur[n]
}

// closeOver adds the positions reachable by letting wildcards match the
// empty string.
func closeOver(states []bool, pattern string) {
	for j := 0; j < len(pattern); j++ {
		if states[j] && (pattern[j] == '*' || pattern[j] == '%') {
			states[j+1] = true
		}
	}
}

// listRoot is the mailbox name returned for LIST with an empty pattern:
// the root of the reference's hierarchy (RFC 3501 section 6.3.8).
func listRoot(ref string) string {
	if i := strings.Index(ref, delim); i >= 0 {
		return ref[:i+1]
	}
	return ""
}
