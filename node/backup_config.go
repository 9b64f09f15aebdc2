package node

import (
	"fmt"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/cluster/backup"
)

// BackupConfig configures the node's encrypted backups (package
// cluster/backup): where they go, how often they and the restore drills
// run, and how many are kept.
type BackupConfig struct {
	// Targets are where backups go ([[backup.targets]] tables, or
	// --backup-target REGION=URL on serve), each labelled with a region.
	// None turns scheduled backups off. Use two or more regions: a
	// backup counts as done only when every target has it.
	Targets []backup.TargetConfig `toml:"targets"`
	// Every is the time between backups: 0 means daily, at least 1m.
	Every time.Duration `toml:"every"`
	// DrillEvery is the time between restore drills: 0 means weekly, a
	// negative value turns them off.
	DrillEvery time.Duration `toml:"drill_every"`
	// Retention keeps the newest backup of each of the last N days,
	// weeks and months ([backup.retention] daily, weekly, monthly; 0
	// means 7, 4 and 12, a negative value none of that kind).
	Retention backup.Retention `toml:"retention"`
	// Recipient is an existing backup public key (age1pq1...) to encrypt
	// to, instead of the key pair generated when the data directory is
	// initialized.
	Recipient string `toml:"recipient"`
	// DrillIdentityFile is the identity restore drills decrypt with. By
	// default drills use DataDir/backup.identity while it is there, and
	// are skipped once it has been moved offline.
	DrillIdentityFile string `toml:"drill_identity_file"`
	// TempDir holds the encrypted copies being uploaded and the state
	// files being checked; default DataDir/backup-tmp.
	TempDir string `toml:"temp_dir"`
}

func (b BackupConfig) validate() []error {
	var errs []error
	seen := map[string]bool{}
	for i, t := range b.Targets {
		if err := t.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("backup.targets[%d]: %w", i, err))
			continue
		}
		if seen[t.Region] {
			errs = append(errs, fmt.Errorf("backup.targets[%d]: region %q is used by two targets", i, t.Region))
		}
		seen[t.Region] = true
	}
	if err := b.schedule().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("backup: %w", err))
	}
	if r := strings.TrimSpace(b.Recipient); r != "" {
		if _, err := backup.ParseRecipient(r); err != nil {
			errs = append(errs, fmt.Errorf("backup.recipient: %w", err))
		}
	}
	return errs
}

// schedule is the backup and drill schedule without the drill identity.
func (b BackupConfig) schedule() backup.Schedule {
	return backup.Schedule{BackupEvery: b.Every, DrillEvery: b.DrillEvery}
}

// mergeBackupTargets applies --backup-target flags to the configured
// targets: a flag for a region already configured replaces it, others
// are added.
func mergeBackupTargets(cfg []backup.TargetConfig, flags []string) ([]backup.TargetConfig, error) {
	out := append([]backup.TargetConfig(nil), cfg...)
	for _, f := range flags {
		t, err := backup.ParseTargetFlag(f)
		if err != nil {
			return nil, fmt.Errorf("--backup-target: %w", err)
		}
		replaced := false
		for i := range out {
			if out[i].Region == t.Region {
				out[i], replaced = t, true
			}
		}
		if !replaced {
			out = append(out, t)
		}
	}
	return out, nil
}

// repeatedFlag collects every value of a flag given several times.
type repeatedFlag []string

func (r *repeatedFlag) String() string { return strings.Join(*r, ",") }

func (r *repeatedFlag) Set(v string) error {
	*r = append(*r, v)
	return nil
}
