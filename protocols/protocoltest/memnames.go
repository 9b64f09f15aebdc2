package protocoltest

import (
	"slices"
	"strings"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// The names, flags and passwords MemStore accepts follow the rules the
// production store uses (raftstore/schema/names.go), so that it accepts
// and refuses exactly what that store does.

// isBelow reports whether name is parent or one of its descendants.
func isBelow(name, parent string) bool {
	return name == parent || strings.HasPrefix(name, parent+schema.MailboxDelimiter)
}

// storedFlags is flags as the production store returns them after a
// round trip through its sealed record: nil when empty.
func storedFlags(flags []string) []string {
	if len(flags) == 0 {
		return nil
	}
	return slices.Clone(flags)
}
