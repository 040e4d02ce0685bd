package directory

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/vrf"
)

// Defaults of the optional [Config] fields.
const (
	// DefaultEpochInterval: an epoch closes this long after the previous
	// one when changes are pending (design.md 7).
	DefaultEpochInterval = time.Second
	// DefaultHeartbeatInterval: an epoch closes at least this often when
	// idle, so clients can bound staleness by the epoch timestamp.
	DefaultHeartbeatInterval = 10 * time.Second
	// DefaultCacheSize is the embedded store's block cache, in bytes.
	DefaultCacheSize = 256 << 20
	// DefaultStartupWait bounds how long New waits for the log to publish
	// a checkpoint covering the appends that were in flight when the
	// previous process stopped (see New).
	DefaultStartupWait = 30 * time.Second
	// DefaultTokenTTL is how long an enrollment token issued with
	// [TokenCredentials] stays valid.
	DefaultTokenTTL = 15 * time.Minute
)

// Limits enforced on requests, as domain checks (the transport may enforce
// smaller message sizes as well).
const (
	// MaxBatchLookup is the most handles in one BatchLookup.
	MaxBatchLookup = 100
	// MaxChangesPerRequest is the most handle changes in one Change or
	// Recover request (an account rarely has more than a few handles).
	MaxChangesPerRequest = 16
	// MaxHandleInput bounds the handle string before normalisation.
	MaxHandleInput = 512
	// MaxDeviceSetSize bounds a device set encoding: 64 devices with the
	// largest accepted HPKE key, plus the account key (design.md 5.4).
	MaxDeviceSetSize = 19 + 64*(64+2048) + 96
	// MaxCredentialSize bounds an enrollment credential.
	MaxCredentialSize = 4096
	// MaxMonitorChanges is the most versions one Monitor answer carries; a
	// client further behind gets ErrResourceExhausted (design.md 13 needs
	// the whole chain in one answer).
	MaxMonitorChanges = 1024
	// MaxQueuedChanges bounds the changes waiting for the sequencer (for
	// example while an epoch checkpoint waits for witnesses); beyond it
	// changes are refused with ErrResourceExhausted.
	MaxQueuedChanges = 200_000
	// maxGroup is the most changes appended in one Append call.
	maxGroup = 8192
)

// Config configures a [Directory]. New validates it; zero optional fields
// select the defaults.
type Config struct {
	// Log is the transparency log (required). The directory must be its
	// only writer. New does not close it; the caller closes it after
	// Directory.Close.
	Log log.Log

	// Origin is the log's checkpoint origin (required); it is also bound
	// into every signed change statement.
	Origin string

	// LogVerifierKey is the log's checkpoint verifier key in C2SP
	// signed-note vkey form (required). The directory verifies every epoch
	// checkpoint it serves with it.
	LogVerifierKey string

	// NextLogVerifierKey, when set, is the vkey of the key the log signs
	// its checkpoints with in addition to LogVerifierKey's, during a
	// rotation of the log key (design.md 11.1): Rotate accepts a log key
	// rotation only to this key. After the rotation it is the log's
	// current key; New accepts it as such, and the rotation finishes when
	// the operator makes it LogVerifierKey and clears this field.
	NextLogVerifierKey string

	// NextVRFKey is the VRF private key a rotation of the VRF key rotates
	// to (design.md 11.2, ktd's directory.vrf_next_key_file): Rotate refuses a VRF
	// rotation to any other key. After the rotation it is the current VRF
	// key; the rotation finishes when the operator makes it VRFKey, the
	// old key PrevVRFKey, and clears this field.
	NextVRFKey *vrf.PrivateKey
	// PrevVRFKey is the VRF key before VRFKey, once the log rotated the
	// VRF key and VRFKey is the new one: lookups of handles absent under
	// the current key carry a proof under it (design.md 11.2). New fails
	// without it after a VRF rotation.
	PrevVRFKey *vrf.PrivateKey

	// VerifyVRFProof verifies the ECVRF proofs of VRF key rotation records
	// (api.VerifyRotation); nil: the directory cannot rotate its VRF key
	// and a VRF rotation record in its log stops New.
	VerifyVRFProof api.VRFProofVerifier

	// VRFKey is the VRF private key (required).
	VRFKey *vrf.PrivateKey

	// RecoveryKey is the Ed25519 public key of the operator's recovery
	// path (required, 32 bytes): the only signer of kind-4 changes
	// (design.md 6.1 R6).
	RecoveryKey ed25519.PublicKey

	// Credentials checks enrollment credentials (required). Use
	// NewTokenCredentials, an operator's own implementation, or, for demos
	// only, OpenEnrollment.
	Credentials Credentials

	// StateDir is the embedded store's directory (required); created if
	// missing. It holds what the log does not (openings, device sets, the
	// handle-to-index cache) and the map and handle state, which can be
	// rebuilt from the log.
	StateDir string

	// WitnessPolicy is the witness policy text published in the
	// parameters (informational here; the log enforces it).
	WitnessPolicy string

	// AuditPolicy, when not empty, is the audit policy text
	// (log/witness.ParseAuditPolicy; design.md 14.3): the directory then
	// serves the latest epoch whose checkpoint carries audit statements
	// satisfying it, which it collects from the auditors' URLs (see
	// audit.go), and publishes it in the parameters. New refuses a policy
	// that CheckAuditPolicy refuses. Empty: every published epoch is
	// served at once.
	AuditPolicy []byte

	// AuditHTTPClient sends the requests for audit statements (default: a
	// client with DefaultAuditTimeout).
	AuditHTTPClient *http.Client

	// EpochInterval is how long after the previous epoch the next one
	// closes when changes are pending (default DefaultEpochInterval).
	EpochInterval time.Duration

	// HeartbeatInterval is how often an epoch closes when idle (default
	// DefaultHeartbeatInterval); at least EpochInterval.
	HeartbeatInterval time.Duration

	// CacheSize is the embedded store's block cache in bytes (default
	// DefaultCacheSize).
	CacheSize int64

	// StartupWait bounds the wait for in-flight appends at startup
	// (default DefaultStartupWait).
	StartupWait time.Duration

	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger

	// Metrics receives counters (default: none).
	Metrics Metrics

	// Replication, when set, runs the directory as one instance of a
	// replicated directory (design.md 17.1; see replicated.go): it starts
	// as a reader following Log, and becomes the writer when it acquires
	// the lease. Log must then be a backend shared by every instance
	// (log/trillian), each instance with its own StateDir.
	Replication *Replication
}

func (c *Config) validate() (note.Verifier, error) {
	switch {
	case c.Log == nil:
		return nil, errors.New("directory: Config.Log is required")
	case c.Origin == "":
		return nil, errors.New("directory: Config.Origin is required")
	case len(c.Origin) > 0xffff:
		return nil, errors.New("directory: Config.Origin is longer than 65535 bytes")
	case c.VRFKey == nil:
		return nil, errors.New("directory: Config.VRFKey is required")
	case len(c.RecoveryKey) != ed25519.PublicKeySize:
		return nil, fmt.Errorf("directory: Config.RecoveryKey has %d bytes, want %d", len(c.RecoveryKey), ed25519.PublicKeySize)
	case c.Credentials == nil:
		return nil, errors.New("directory: Config.Credentials is required (OpenEnrollment accepts anything, for demos only)")
	case c.StateDir == "":
		return nil, errors.New("directory: Config.StateDir is required")
	}
	v, err := note.NewVerifier(c.LogVerifierKey)
	if err != nil {
		return nil, fmt.Errorf("directory: Config.LogVerifierKey: %w", err)
	}
	if v.Name() != c.Origin {
		return nil, fmt.Errorf("directory: log verifier key is for %q, origin is %q", v.Name(), c.Origin)
	}
	if c.NextLogVerifierKey != "" {
		nv, err := note.NewVerifier(c.NextLogVerifierKey)
		switch {
		case err != nil:
			return nil, fmt.Errorf("directory: Config.NextLogVerifierKey: %w", err)
		case nv.Name() != c.Origin:
			return nil, fmt.Errorf("directory: next log verifier key is for %q, origin is %q", nv.Name(), c.Origin)
		case vkeyRaw(c.NextLogVerifierKey) == [32]byte{} || vkeyRaw(c.NextLogVerifierKey) == vkeyRaw(c.LogVerifierKey):
			return nil, errors.New("directory: Config.NextLogVerifierKey must be an Ed25519 key other than LogVerifierKey's")
		}
	}
	if c.EpochInterval == 0 {
		c.EpochInterval = DefaultEpochInterval
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.EpochInterval < 0 || c.HeartbeatInterval < c.EpochInterval {
		return nil, fmt.Errorf("directory: need 0 < EpochInterval (%v) <= HeartbeatInterval (%v)", c.EpochInterval, c.HeartbeatInterval)
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.StartupWait == 0 {
		c.StartupWait = DefaultStartupWait
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = nopMetrics{}
	}
	if c.Replication != nil {
		r := *c.Replication // the caller's value stays as it was
		if err := r.validate(); err != nil {
			return nil, err
		}
		c.Replication = &r
	}
	return v, nil
}

// Metrics receives the directory's counters; binaries adapt it to
// Prometheus or OpenTelemetry. Methods must be cheap and safe for
// concurrent use.
type Metrics interface {
	// ChangesAccepted counts changes appended to the log.
	ChangesAccepted(n int)
	// ChangeRejected counts a rejected request by sentinel error.
	ChangeRejected(kind error)
	// EpochClosed reports a published epoch: its number, the changes it
	// covers and how long closing it took (append, map, checkpoint).
	EpochClosed(epoch uint64, changes int, took time.Duration)
	// Lookups counts handles looked up.
	Lookups(n int)
}

type nopMetrics struct{}

func (nopMetrics) ChangesAccepted(int)                    {}
func (nopMetrics) ChangeRejected(error)                   {}
func (nopMetrics) EpochClosed(uint64, int, time.Duration) {}
func (nopMetrics) Lookups(int)                            {}

// Credentials checks the account credential of an enrollment: proof, from
// outside the protocol (an SMS or email code, an operator-issued token),
// that the enrolling party controls the handle (design.md 6.1 R4).
type Credentials interface {
	// Verify returns nil if credential is valid for handle (in canonical
	// form), and an error saying why not otherwise.
	Verify(ctx context.Context, handle, credential string) error
}

// OpenEnrollment is an INSECURE [Credentials] that accepts every
// credential: anyone can enroll any handle that has no authorizers. It is
// for demos and tests only; New logs a warning when it is used.
type OpenEnrollment struct{}

// Verify accepts everything.
func (OpenEnrollment) Verify(context.Context, string, string) error { return nil }

// TokenCredentials issues and checks enrollment tokens: an HMAC-SHA256,
// under a key the operator keeps, of the canonical handle and an expiry
// time. The operator's verification service (SMS, email) calls IssueToken
// once it has checked control of the handle and hands the token to the
// client.
//
// Token format: "kt1." || decimal Unix expiry || "." || base64url(HMAC(key,
// "kt/v1/enroll-token" || 0x00 || expiry || 0x00 || handle)). A token can be
// used again until it expires (tokens are not single-use; keep TTL short).
type TokenCredentials struct {
	key []byte
	// TTL is how long issued tokens stay valid (default DefaultTokenTTL).
	TTL time.Duration
	now func() time.Time
}

// NewTokenCredentials returns token credentials under key (at least 32
// bytes).
func NewTokenCredentials(key []byte) (*TokenCredentials, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("directory: token key has %d bytes, want at least 32", len(key))
	}
	return &TokenCredentials{key: append([]byte(nil), key...), TTL: DefaultTokenTTL, now: time.Now}, nil
}

func (c *TokenCredentials) mac(handle string, expiry int64) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte("kt/v1/enroll-token\x00"))
	m.Write(strconv.AppendInt(nil, expiry, 10))
	m.Write([]byte{0})
	m.Write([]byte(handle))
	return m.Sum(nil)
}

// IssueToken returns a token for handle, which must be in canonical form.
func (c *TokenCredentials) IssueToken(handle string) string {
	exp := c.now().Add(c.TTL).Unix()
	return "kt1." + strconv.FormatInt(exp, 10) + "." + base64.RawURLEncoding.EncodeToString(c.mac(handle, exp))
}

// Verify implements [Credentials].
//
// SPEC(design.md 6.1 R4)
func (c *TokenCredentials) Verify(_ context.Context, handle, credential string) error {
	rest, ok := strings.CutPrefix(credential, "kt1.")
	if !ok {
		return errors.New("not an enrollment token")
	}
	expS, macS, ok := strings.Cut(rest, ".")
	if !ok {
		return errors.New("malformed enrollment token")
	}
	exp, err := strconv.ParseInt(expS, 10, 64)
	if err != nil || strconv.FormatInt(exp, 10) != expS {
		return errors.New("malformed enrollment token expiry")
	}
	got, err := base64.RawURLEncoding.DecodeString(macS)
	if err != nil {
		return errors.New("malformed enrollment token MAC")
	}
	if !hmac.Equal(got, c.mac(handle, exp)) {
		return errors.New("enrollment token is not valid for this handle")
	}
	if c.now().Unix() > exp {
		return errors.New("enrollment token expired")
	}
	return nil
}
