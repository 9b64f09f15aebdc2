package cluster

import (
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/mailcluster/mailcluster/cluster/transport"
)

// Files of a node's cluster identity, in DataDir/cluster.
const (
	identityDir   = "cluster"
	caFile        = "ca.pem"
	certFile      = "node.pem"
	keyFile       = "node.key"
	bootstrapFile = "bootstrap" // present until a new cluster is set up
	membersFile   = "members.json"
	pendingCAKey  = "ca.key.pending"
	identityPerm  = 0o600
)

func identityPath(dataDir, name string) string {
	return filepath.Join(dataDir, identityDir, name)
}

// HasIdentity reports whether a data directory holds a cluster identity:
// the node created a cluster or joined one.
func HasIdentity(dataDir string) bool {
	_, err := os.Stat(identityPath(dataDir, certFile))
	return err == nil
}

func loadIdentity(dataDir string) (*transport.Identity, error) {
	var pems [3][]byte
	for i, name := range []string{caFile, certFile, keyFile} {
		b, err := os.ReadFile(identityPath(dataDir, name))
		if err != nil {
			return nil, fmt.Errorf("cluster identity: %w", err)
		}
		pems[i] = b
	}
	return transport.LoadIdentity(pems[0], pems[1], pems[2])
}

// writeIdentity stores a node's identity; the node certificate is written
// last, since its presence marks the identity complete.
func writeIdentity(dataDir string, caPEM, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(filepath.Join(dataDir, identityDir), 0o700); err != nil {
		return fmt.Errorf("cluster identity: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{caFile, caPEM}, {keyFile, keyPEM}, {certFile, certPEM}} {
		if err := writeFileSync(identityPath(dataDir, f.name), f.data); err != nil {
			return fmt.Errorf("cluster identity: %w", err)
		}
	}
	return nil
}

// createCluster makes the identity of the first node of a new cluster: a
// new CA, and a certificate for this node. The CA key waits in a local
// file until it is sealed into the meta shard (see Open), and a marker
// says the new cluster's shards must still be bootstrapped.
func createCluster(cfg Config, clusterID string) error {
	ca, caKey, err := transport.NewCA(clusterID)
	if err != nil {
		return err
	}
	key, keyPEM, err := transport.NewNodeKey()
	if err != nil {
		return err
	}
	certPEM, err := ca.Issue(cfg.NodeID, key.Public(), certHosts(cfg.Advertise))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, identityDir), 0o700); err != nil {
		return fmt.Errorf("cluster identity: %w", err)
	}
	if err := writeFileSync(identityPath(cfg.DataDir, pendingCAKey), caKey); err != nil {
		return fmt.Errorf("cluster identity: %w", err)
	}
	if err := writeFileSync(identityPath(cfg.DataDir, bootstrapFile), []byte(clusterID)); err != nil {
		return fmt.Errorf("cluster identity: %w", err)
	}
	return writeIdentity(cfg.DataDir, ca.CertPEM(), certPEM, keyPEM)
}

// certHosts returns the host of a cluster address, for the certificate.
func certHosts(addr string) []string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return nil
	}
	return []string{host}
}

// issueFor signs a certificate for a joining node with the CA.
func issueFor(ca *transport.CA, nodeID string, pub crypto.PublicKey, addr string) ([]byte, error) {
	return ca.Issue(nodeID, pub, certHosts(addr))
}

func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, identityPerm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func readOptional(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}
