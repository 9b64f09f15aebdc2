package schema

// Command levels. A node whose software is older than a command form
// cannot decode an entry written in it: its FSM logs the entry as
// undecodable and skips it, and its replica silently diverges. So every
// form added after the first release has a level, each node records the
// level its software applies (the cluster's node records), and a
// proposer writes a form only once every member reports its level. A
// rolling upgrade then never hands a replica an entry it cannot apply;
// the new forms come into use when the last node has been upgraded.
const (
	// LevelBase is the forms of the releases that recorded no level:
	// every op and field not named below. Nodes without a recorded level
	// are at this level.
	LevelBase = 0
	// LevelSearchRecords adds Append.SearchRecord (in AppendBatch items
	// too): releases at LevelBase did not all have it.
	LevelSearchRecords = 1
	// LevelAppendClaimsRecent adds Append.ClaimRecent and the claim in
	// its Result.
	LevelAppendClaimsRecent = 2
	// LevelRepairBlob adds RepairBlob.
	LevelRepairBlob = 3
	// LevelRepairRecord adds RepairRecord and RepairOutbound.
	LevelRepairRecord = 4

	// CommandLevel is the level this software applies.
	CommandLevel = LevelRepairRecord
)

// RecentValue names the mailbox-scoped user value holding the highest
// UID a session has claimed as \Recent (4 bytes, big-endian). A counter
// like UIDNEXT, so it is not sealed; SwapUserValue moves it, and so does
// an Append with ClaimRecent.
const RecentValue = "recent"

// Level returns the command level an entry carrying p needs: the
// highest level of the forms it uses.
func Level(p Payload) int {
	switch p := p.(type) {
	case *Append:
		switch {
		case p.ClaimRecent:
			return LevelAppendClaimsRecent
		case len(p.SearchRecord) > 0:
			return LevelSearchRecords
		}
	case *AppendBatch:
		for i := range p.Items { // items carry no ClaimRecent
			if len(p.Items[i].SearchRecord) > 0 {
				return LevelSearchRecords
			}
		}
	case *RepairBlob:
		return LevelRepairBlob
	case *RepairRecord, *RepairOutbound:
		return LevelRepairRecord
	}
	return LevelBase
}
