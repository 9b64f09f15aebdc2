package cluster

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/mailcluster/mailcluster/cluster/transport"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// Joining: a new node dials any member's cluster port without a
// certificate and sends a join request. Both sides prove they know the
// join token with an HMAC bound to that TLS session (an exporter key), so
// a man in the middle learns nothing and cannot relay. The member checks
// and spends the token, records the node, and answers with the cluster
// CA, a certificate for the node's key, and the master key encrypted
// under a key derived from the token and the session.
const (
	tokenPrefixText = "MCJ1"
	exporterLabel   = "EXPORTER-mailcluster-join"
	// DefaultTokenTTL is how long a join token stays valid.
	DefaultTokenTTL = time.Hour
	// tokenKeep is how long a spent or expired token's record is kept.
	tokenKeep         = time.Hour
	maxJoinBody       = 64 << 10
	minBootstrapToken = 16
)

// clusterKeys are the keys the cluster package derives from the master
// key: they seal the CA key and the join tokens in the meta shard.
type clusterKeys struct {
	ca     seal.Keyring
	tokens seal.Keyring
}

func deriveClusterKeys(master [32]byte) clusterKeys {
	ring := func(label string) seal.Keyring {
		k := seal.Derive(master, label)
		h := sha256.Sum256(k[:])
		return seal.NewStatic(seal.Key{ID: uint32(h[0])<<24 | uint32(h[1])<<16 | uint32(h[2])<<8 | uint32(h[3]), Secret: k})
	}
	return clusterKeys{ca: ring("cluster-ca"), tokens: ring("join-tokens")}
}

func (c *Cluster) sealCAKey(keyPEM []byte) ([]byte, error) {
	return c.sealer.Seal(c.keys.ca, seal.KindSetting, nil, []byte(settingCAKey), keyPEM)
}

// ca loads the cluster CA from the meta shard (any node can issue a
// certificate to a joining node).
func (c *Cluster) ca() (*transport.CA, error) {
	certPEM, sealed := c.metaSetting(settingCACert), c.metaSetting(settingCAKey)
	if certPEM == nil || sealed == nil {
		return nil, fmt.Errorf("cluster CA not in this node's meta replica yet: %w", schema.ErrUnavailable)
	}
	keyPEM, err := c.sealer.Open(c.keys.ca, seal.KindSetting, nil, []byte(settingCAKey), sealed)
	if err != nil {
		return nil, fmt.Errorf("unseal the cluster CA key: %w", err)
	}
	return transport.LoadCA(certPEM, keyPEM)
}

// tokenRecord is a one-time join token as the meta shard keeps it
// (sealed).
type tokenRecord struct {
	Secret  []byte    `json:"s"`
	Expires time.Time `json:"e"`
	Used    string    `json:"u,omitempty"` // the node that spent it
}

// IssueToken creates a one-time join token valid for ttl (0 means
// DefaultTokenTTL). The token is a secret: whoever has it can join a node.
func (c *Cluster) IssueToken(ctx context.Context, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	var id [8]byte
	secret := make([]byte, 32)
	if _, err := rand.Read(id[:]); err != nil {
		return "", err
	}
	if _, err := rand.Read(secret); err != nil {
		return "", err
	}
	idHex := hex.EncodeToString(id[:])
	sealed, err := c.sealToken(idHex, tokenRecord{Secret: secret, Expires: time.Now().Add(ttl).UTC()})
	if err != nil {
		return "", err
	}
	if err := c.swapSetting(ctx, tokenPrefix+idHex, nil, sealed); err != nil {
		return "", fmt.Errorf("issue join token: %w", err)
	}
	return tokenPrefixText + "." + idHex + "." + base64.RawURLEncoding.EncodeToString(secret), nil
}

func (c *Cluster) sealToken(id string, t tokenRecord) ([]byte, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	return c.sealer.Seal(c.keys.tokens, seal.KindSetting, nil, []byte(tokenPrefix+id), b)
}

func (c *Cluster) openToken(id string, sealed []byte) (tokenRecord, error) {
	var t tokenRecord
	b, err := c.sealer.Open(c.keys.tokens, seal.KindSetting, nil, []byte(tokenPrefix+id), sealed)
	if err != nil {
		return t, err
	}
	return t, json.Unmarshal(b, &t)
}

// expireTokens deletes token records spent or expired for tokenKeep (the
// meta leader runs it).
func (c *Cluster) expireTokens() {
	m := c.meta()
	if m == nil {
		return
	}
	var all map[string][]byte
	_ = m.View(func(r *raftstore.Reader) error { all = r.Settings(tokenPrefix); return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for key, sealed := range all {
		id := strings.TrimPrefix(key, tokenPrefix)
		t, err := c.openToken(id, sealed)
		if err == nil && time.Since(t.Expires) < tokenKeep {
			continue
		}
		if err := c.swapSetting(ctx, key, sealed, nil); err != nil && !errors.Is(err, schema.ErrConflict) {
			return
		}
	}
}

// parseToken splits a join token into its id ("" for a bootstrap token)
// and the key both sides prove knowledge of.
func parseToken(token string) (id string, key []byte, err error) {
	token = strings.TrimSpace(token)
	if parts := strings.Split(token, "."); len(parts) == 3 && parts[0] == tokenPrefixText {
		secret, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil || len(secret) != 32 || len(parts[1]) != 16 {
			return "", nil, errors.New("malformed join token")
		}
		k := sha256.Sum256(secret)
		return parts[1], k[:], nil
	}
	if len(token) < minBootstrapToken {
		return "", nil, fmt.Errorf("join token too short (a bootstrap token has at least %d characters)", minBootstrapToken)
	}
	k := sha256.Sum256([]byte(token))
	return "", k[:], nil
}

// joinRequest is what a joining node sends.
type joinRequest struct {
	NodeID  string `json:"node_id"`
	Region  string `json:"region"`
	Address string `json:"address"`
	Version string `json:"version"`
	// Commands is the joining software's command level
	// (schema.CommandLevel); a node below the cluster's is refused.
	Commands  int    `json:"commands,omitempty"`
	PublicKey []byte `json:"public_key"`
	TokenID   string `json:"token_id"`
	Proof     []byte `json:"proof"`
}

// joinResponse is what a member answers.
type joinResponse struct {
	ClusterID  string `json:"cluster_id"`
	CACert     []byte `json:"ca_cert"`
	Cert       []byte `json:"cert"`
	MailShards int    `json:"mail_shards"`
	MasterKey  []byte `json:"master_key"` // sealed, see wrapKey
	Proof      []byte `json:"proof"`
}

func (r *joinRequest) mac(key, binding []byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, f := range [][]byte{[]byte("join-request"), binding, []byte(r.NodeID), []byte(r.Region), []byte(r.Address), r.PublicKey, []byte(r.TokenID)} {
		m.Write([]byte{byte(len(f) >> 8), byte(len(f))})
		m.Write(f)
	}
	return m.Sum(nil)
}

func (r *joinResponse) mac(key, binding []byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, f := range [][]byte{[]byte("join-response"), binding, []byte(r.ClusterID), r.CACert, r.Cert, []byte(fmt.Sprint(r.MailShards)), r.MasterKey} {
		m.Write([]byte{byte(len(f) >> 8), byte(len(f))})
		m.Write(f)
	}
	return m.Sum(nil)
}

// wrapKey encrypts the master key for the joining node under a key
// derived from the token and this TLS session.
func wrapKey(tokenKey, binding []byte, nodeID string, master []byte) ([]byte, error) {
	aead, err := joinAEAD(tokenKey, binding)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, master, []byte(nodeID)), nil
}

func unwrapKey(tokenKey, binding []byte, nodeID string, wrapped []byte) ([]byte, error) {
	aead, err := joinAEAD(tokenKey, binding)
	if err != nil {
		return nil, err
	}
	if len(wrapped) < aead.NonceSize() {
		return nil, errors.New("wrapped master key too short")
	}
	return aead.Open(nil, wrapped[:aead.NonceSize()], wrapped[aead.NonceSize():], []byte(nodeID))
}

func joinAEAD(tokenKey, binding []byte) (interface {
	NonceSize() int
	Seal(dst, nonce, plaintext, ad []byte) []byte
	Open(dst, nonce, ciphertext, ad []byte) ([]byte, error)
}, error) {
	k, err := hkdf.Key(sha256.New, tokenKey, binding, "mailcluster join master key", chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	return chacha20poly1305.NewX(k)
}

// serveJoin handles a join request (on any member).
func (c *Cluster) serveJoin(w http.ResponseWriter, r *http.Request) {
	conn, _ := r.Context().Value(joinConnKey{}).(net.Conn)
	refuse := func(status int, reason string, err error) {
		c.log.Warn("join refused", "reason", reason, "err", err, "remote", r.RemoteAddr)
		http.Error(w, reason, status)
	}
	binding, err := transport.ExportKey(conn, exporterLabel)
	if err != nil {
		refuse(http.StatusBadRequest, "no TLS session", err)
		return
	}
	var req joinRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJoinBody)).Decode(&req); err != nil {
		refuse(http.StatusBadRequest, "bad join request", err)
		return
	}
	tokenKey, sealed, rec, status, reason := c.checkToken(&req, binding)
	if status != 0 {
		refuse(status, reason, nil)
		return
	}
	if !validNodeID(req.NodeID) || req.Region == "" || len(req.Region) > 64 {
		refuse(http.StatusBadRequest, "bad node id or region", nil)
		return
	}
	if _, _, err := net.SplitHostPort(req.Address); err != nil {
		refuse(http.StatusBadRequest, "bad cluster address", err)
		return
	}
	pub, err := transport.DecodePublicKey(req.PublicKey)
	if err != nil {
		refuse(http.StatusBadRequest, "bad public key", err)
		return
	}
	if level := c.CommandLevel(); req.Commands < level {
		// Its software could not apply entries the members already write.
		refuse(http.StatusUpgradeRequired, fmt.Sprintf("the joining node's software applies command level %d, "+
			"the cluster's nodes apply %d: run the newer version on it", req.Commands, level), nil)
		return
	}
	ca, err := c.ca()
	if err != nil {
		refuse(http.StatusServiceUnavailable, "cluster not ready to admit nodes", err)
		return
	}
	ctx := r.Context()
	node := NodeRecord{ID: req.NodeID, Region: req.Region, Address: req.Address, Version: req.Version,
		Commands: req.Commands, Joined: time.Now().UTC()}
	// Before the token is spent: a join refused for its id may be made
	// again under another id with the same token.
	if reason := c.joinConflict(node, c.metaSetting(nodeKey(node.ID))); reason != "" {
		refuse(http.StatusConflict, reason, nil)
		return
	}
	if req.TokenID != "" {
		rec.Used = req.NodeID
		spent, err := c.sealToken(req.TokenID, rec)
		if err == nil {
			err = c.swapSetting(ctx, tokenPrefix+req.TokenID, sealed, spent)
		}
		if err != nil {
			refuse(http.StatusForbidden, "join token already used", err)
			return
		}
	}
	if err := c.recordJoin(ctx, node); err != nil {
		if errors.Is(err, schema.ErrConflict) {
			reason := c.joinConflict(node, c.metaSetting(nodeKey(node.ID)))
			if reason == "" {
				reason = "node id " + node.ID + " is already taken in this cluster"
			}
			refuse(http.StatusConflict, reason, err)
			return
		}
		refuse(http.StatusServiceUnavailable, "cannot record the node", err)
		return
	}
	cert, err := issueFor(ca, node.ID, pub, node.Address)
	if err != nil {
		refuse(http.StatusInternalServerError, "cannot issue a certificate", err)
		return
	}
	resp := joinResponse{ClusterID: string(c.metaSetting(settingClusterID)), CACert: ca.CertPEM(), Cert: cert, MailShards: c.mailShardCount()}
	if resp.MasterKey, err = wrapKey(tokenKey, binding, node.ID, c.cfg.MasterKey[:]); err != nil {
		refuse(http.StatusInternalServerError, "cannot wrap the master key", err)
		return
	}
	resp.Proof = resp.mac(tokenKey, binding)
	c.log.Info("node joined", "joined", node.ID, "region", node.Region, "address", node.Address)
	c.kick()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// recordJoin records a joining node. The same id may join again only to
// finish a join whose answer was lost: the record must be the one that
// join made (same address and region, not removed) and the node must not
// have answered since (so a live node's identity cannot be taken).
func (c *Cluster) recordJoin(ctx context.Context, node NodeRecord) error {
	err := c.swapSetting(ctx, nodeKey(node.ID), nil, encodeJSON(node))
	if !errors.Is(err, schema.ErrConflict) {
		return err
	}
	old := c.metaSetting(nodeKey(node.ID))
	var prev NodeRecord
	if old == nil || json.Unmarshal(old, &prev) != nil || c.joinConflict(node, old) != "" {
		return err
	}
	node.Joined = prev.Joined
	return c.swapSetting(ctx, nodeKey(node.ID), old, encodeJSON(node))
}

// joinConflict says why node cannot join under its id, whose record is
// old (nil if none), or "" when it may: the id is free, or its record is
// the one an earlier join of the same node made, whose answer was lost
// (recordJoin). The reason tells the operator what to do instead.
func (c *Cluster) joinConflict(node NodeRecord, old []byte) string {
	if old == nil {
		return ""
	}
	var prev NodeRecord
	switch {
	case json.Unmarshal(old, &prev) != nil:
		return "node id " + node.ID + " is already taken in this cluster"
	case prev.Removed:
		// Its certificate is refused for good: an id names one machine.
		return "node id " + node.ID + " was removed from this cluster and cannot join again: start this node with another node id"
	case prev.Address != node.Address || prev.Region != node.Region || c.health.seenOnce(node.ID):
		return "node id " + node.ID + " is taken by a member of this cluster: if that member's data directory was lost, remove it (mailnode cluster remove " +
			node.ID + ") and start this node with another node id"
	}
	return ""
}

// checkToken verifies a join request's proof against its token; a
// non-zero status refuses it.
func (c *Cluster) checkToken(req *joinRequest, binding []byte) (key, sealed []byte, rec tokenRecord, status int, reason string) {
	if req.TokenID == "" {
		if c.cfg.BootstrapToken == "" {
			return nil, nil, rec, http.StatusForbidden, "invalid join token"
		}
		_, key, _ = parseToken(c.cfg.BootstrapToken)
	} else {
		sealed = c.metaSetting(tokenPrefix + req.TokenID)
		if sealed == nil {
			// Issued a moment ago through another node?
			ctx, cancel := context.WithTimeout(context.Background(), readWait)
			_ = c.CatchUpMeta(ctx)
			cancel()
			sealed = c.metaSetting(tokenPrefix + req.TokenID)
		}
		if sealed == nil {
			return nil, nil, rec, http.StatusForbidden, "invalid join token"
		}
		var err error
		if rec, err = c.openToken(req.TokenID, sealed); err != nil {
			return nil, nil, rec, http.StatusForbidden, "invalid join token"
		}
		k := sha256.Sum256(rec.Secret)
		key = k[:]
	}
	if key == nil || !hmac.Equal(req.Proof, req.mac(key, binding)) {
		return nil, nil, rec, http.StatusForbidden, "invalid join token"
	}
	if req.TokenID != "" && (rec.Used != "" || time.Now().After(rec.Expires)) {
		return nil, nil, rec, http.StatusForbidden, "join token expired or already used"
	}
	return key, sealed, rec, 0, ""
}

// JoinRequest describes a node joining a cluster.
type JoinRequest struct {
	// Addr is any member's cluster port (host:port).
	Addr  string
	Token string
	// DataDir is the data directory the node will use; it must not
	// belong to a cluster yet.
	DataDir string
	NodeID  string
	Region  string
	// Advertise is the cluster address other nodes will dial.
	Advertise string
	Version   string
	// CommandLevel is the command level the node will run at
	// (Config.CommandLevel; 0: schema.CommandLevel). A member refuses a
	// node below the cluster's level: it could not apply the log.
	CommandLevel int
}

// JoinResult is what a node gets by joining: the cluster's master key
// (which the caller stores like a key of its own) and its cluster
// identity, which WriteIdentity stores in the data directory.
type JoinResult struct {
	ClusterID  string
	MailShards int
	MasterKey  [32]byte
	caPEM      []byte
	certPEM    []byte
	keyPEM     []byte
}

// WriteIdentity stores the identity a join gave into a data directory;
// Open then starts the node as a member. Store the master key first: a
// data directory with an identity cannot join again.
func WriteIdentity(dataDir string, res JoinResult) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	return writeIdentity(dataDir, res.caPEM, res.certPEM, res.keyPEM)
}

// Join admits this node to a cluster with a join token: the member at
// Addr checks the token and answers with a certificate for a new key of
// this node, the cluster CA and the cluster's master key.
func Join(ctx context.Context, req JoinRequest) (JoinResult, error) {
	var out JoinResult
	if HasIdentity(req.DataDir) {
		return out, errors.New("join: this data directory already belongs to a cluster")
	}
	if req.Region == "" {
		req.Region = DefaultRegion
	}
	tokenID, tokenKey, err := parseToken(req.Token)
	if err != nil {
		return out, fmt.Errorf("join: %w", err)
	}
	key, keyPEM, err := transport.NewNodeKey()
	if err != nil {
		return out, err
	}
	pub, err := transport.EncodePublicKey(key.Public())
	if err != nil {
		return out, err
	}
	conn, err := transport.DialJoin(ctx, req.Addr)
	if err != nil {
		return out, fmt.Errorf("join: %w", err)
	}
	defer conn.Close()
	binding, err := transport.ExportKey(conn, exporterLabel)
	if err != nil {
		return out, fmt.Errorf("join: %w", err)
	}
	jr := joinRequest{NodeID: req.NodeID, Region: req.Region, Address: req.Advertise, Version: req.Version,
		Commands: softwareLevel(req.CommandLevel), PublicKey: pub, TokenID: tokenID}
	jr.Proof = jr.mac(tokenKey, binding)
	body, _ := json.Marshal(jr)
	hc := &http.Client{Transport: &http.Transport{
		DialTLSContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil },
		MaxIdleConns:   1,
	}}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+req.Addr+"/join", bytes.NewReader(body))
	if err != nil {
		return out, err
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		return out, fmt.Errorf("join: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return out, fmt.Errorf("join refused by %s: %s", req.Addr, strings.TrimSpace(string(msg)))
	}
	var jresp joinResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJoinBody)).Decode(&jresp); err != nil {
		return out, fmt.Errorf("join: bad answer: %w", err)
	}
	if !hmac.Equal(jresp.Proof, jresp.mac(tokenKey, binding)) {
		return out, errors.New("join: the answer does not prove knowledge of the token (not our cluster, or tampered)")
	}
	master, err := unwrapKey(tokenKey, binding, req.NodeID, jresp.MasterKey)
	if err != nil || len(master) != 32 {
		return out, errors.New("join: cannot unwrap the master key")
	}
	if _, err := transport.LoadIdentity(jresp.CACert, jresp.Cert, keyPEM); err != nil {
		return out, fmt.Errorf("join: %w", err)
	}
	out.ClusterID, out.MailShards = jresp.ClusterID, jresp.MailShards
	out.caPEM, out.certPEM, out.keyPEM = jresp.CACert, jresp.Cert, keyPEM
	copy(out.MasterKey[:], master)
	return out, nil
}

func validNodeID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (i > 0 && (r == '.' || r == '_' || r == '-'))
		if !ok {
			return false
		}
	}
	return true
}
