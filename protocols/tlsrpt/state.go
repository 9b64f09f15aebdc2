package tlsrpt

import (
	"sort"
	"strings"
	"time"
)

// State is the counts of a Collector for one period, in a form that can
// be stored (JSON) and merged: a cluster keeps each node's State in its
// replicated store, so that counts survive a restart and one node's
// report covers every node. Domains, policies and failures are sorted,
// so that equal counts encode equally.
type State struct {
	Start   time.Time     `json:"start"`
	Dropped int64         `json:"dropped,omitempty"`
	Domains []DomainState `json:"domains,omitempty"`
}

// DomainState is one recipient domain's counts.
type DomainState struct {
	Domain   string        `json:"domain"`
	Policies []PolicyState `json:"policies"`
}

// PolicyState is the counts under one policy of a domain.
type PolicyState struct {
	Policy   Policy         `json:"policy"`
	Success  int64          `json:"success,omitempty"`
	Failures []FailureState `json:"failures,omitempty"`
}

// FailureState is one failure-details row.
type FailureState struct {
	Result   string `json:"result"`
	MX       string `json:"mx,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Sessions int64  `json:"sessions"`
}

// State returns the counts of the current period, which goes on.
func (c *Collector) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stateLocked()
}

// Changes returns a number that grows with every Record, Merge and
// Rotate: equal numbers mean equal counts.
func (c *Collector) Changes() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changes
}

// Merge adds the counts of s to the current period (with the bounds of
// Record), and moves the period's start back to s.Start if it is
// earlier.
func (c *Collector) Merge(s State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.changes++
	if !s.Start.IsZero() && s.Start.Before(c.start) {
		c.start = s.Start
	}
	c.dropped += max(s.Dropped, 0)
	for _, d := range s.Domains {
		domain := strings.ToLower(strings.TrimSuffix(d.Domain, "."))
		for _, p := range d.Policies {
			if p.Success > 0 {
				c.add(domain, p.Policy, "", "", "", p.Success)
			}
			for _, f := range p.Failures {
				if f.Sessions > 0 && f.Result != "" {
					c.add(domain, p.Policy, f.MX, f.Result, f.Detail, f.Sessions)
				}
			}
		}
	}
}

// stateLocked returns the counts as a State; c.mu is held.
func (c *Collector) stateLocked() State {
	st := State{Start: c.start, Dropped: c.dropped}
	names := make([]string, 0, len(c.domains))
	for d := range c.domains {
		names = append(names, d)
	}
	sort.Strings(names)
	for _, d := range names {
		ds := DomainState{Domain: d}
		keys := make([]string, 0, len(c.domains[d]))
		for k := range c.domains[d] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			cs := c.domains[d][k]
			ps := PolicyState{Policy: cs.policy, Success: cs.success}
			for fk, n := range cs.failures {
				ps.Failures = append(ps.Failures, FailureState{Result: fk.result, MX: fk.mx, Detail: fk.detail, Sessions: n})
			}
			sort.Slice(ps.Failures, func(i, j int) bool {
				a, b := ps.Failures[i], ps.Failures[j]
				if a.Result != b.Result {
					return a.Result < b.Result
				}
				if a.MX != b.MX {
					return a.MX < b.MX
				}
				return a.Detail < b.Detail
			})
			ds.Policies = append(ds.Policies, ps)
		}
		st.Domains = append(st.Domains, ds)
	}
	return st
}
