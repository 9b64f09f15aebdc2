package node

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/node/admin"
)

// keyStoreSyncTimeout bounds rewriting the backups' key store after a
// user deletion; a target that does not answer in time gets it with the
// next backup.
const keyStoreSyncTimeout = 2 * time.Minute

// EraseUser deletes a user through the directory (destroying its key
// first), then rewrites the key store on every backup target at once, so
// the destroyed key is gone from the backups taken before the deletion as
// well (cluster/backup/keystore.go).
func (a adminDirectory) EraseUser(ctx context.Context, address string) (admin.DeleteResult, error) {
	rep, err := a.Directory.EraseUser(ctx, address)
	res := admin.DeleteResult{DeleteReport: rep}
	if err != nil {
		return res, err
	}
	if !rep.KeyDestroyed {
		return res, nil
	}
	run := a.n.backupRunner()
	if run == nil {
		res.BackupNote = "this node has no backup targets: the targets' key store loses the key with the next backup taken by a node that has them"
		return res, nil
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keyStoreSyncTimeout)
	defer cancel()
	writes, err := run.SyncKeyStore(sctx)
	for _, w := range writes {
		res.BackupKeyStore = append(res.BackupKeyStore, admin.KeyStoreWrite{Region: w.Region, OK: w.OK, Error: w.Error})
	}
	if err != nil {
		res.BackupNote = "the key store could not be rewritten everywhere (" + err.Error() + "); the next backup rewrites it, or run `mailnode backup now`"
		a.n.log.Warn("rewrite the backups' key store after a user deletion", "err", err)
	}
	return res, nil
}

// printDeleteResult tells the operator what deleting a user did.
func printDeleteResult(w io.Writer, address string, res admin.DeleteResult) {
	fmt.Fprintf(w, "user %s deleted\n", address)
	if res.KeyDestroyed {
		fmt.Fprintf(w, "  key: destroyed (key mode %s): the user's mail and sealed records are unreadable wherever a copy is\n", res.KeyMode)
	} else {
		fmt.Fprintf(w, "  key: not destroyed: %s\n", res.KeyNote)
	}
	if res.MailDeleted {
		fmt.Fprintf(w, "  mail: deleted from shard %d\n", res.Shard)
	}
	kinds := make([]string, 0, len(res.Removed))
	for k := range res.Removed {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(w, "  %s: %d removed\n", strings.ReplaceAll(k, "_", " "), res.Removed[k])
	}
	for _, t := range res.BackupKeyStore {
		if t.OK {
			fmt.Fprintf(w, "  backups in %s: key store rewritten without the key\n", t.Region)
		} else {
			fmt.Fprintf(w, "  backups in %s: key store NOT rewritten: %s\n", t.Region, t.Error)
		}
	}
	if res.BackupNote != "" {
		fmt.Fprintf(w, "  backups: %s\n", res.BackupNote)
	}
}
