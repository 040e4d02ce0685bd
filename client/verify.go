package client

import (
	"bytes"
	"encoding/base64"
	"strings"
	"time"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log/witness"
	"github.com/keytrans/kt/vrf"
)

// Defaults of [Params].
const (
	// DefaultMaxAge is the freshness bound: the oldest epoch (and witness
	// quorum) a client accepts (design.md 11).
	DefaultMaxAge = 60 * time.Second
	// DefaultSkew is the clock skew allowed between client, directory and
	// witnesses (design.md 12.2).
	DefaultSkew = 10 * time.Second
	// DefaultMaxAuditLag is the audit lag bound: in audit mode, the oldest
	// epoch a client accepts, shorter than DefaultMaxAge because the
	// directory serves only audited epochs (design.md 12.2 step 2.5a).
	DefaultMaxAuditLag = 30 * time.Second
)

// Params are the directory parameters a client pins (design.md 11). Build
// them with [NewParams] from the directory's published parameters (checked
// against what the app vendor shipped), or fill the fields and call
// [Params.Validate]. Every Verify function validates them first and fails
// closed with [ErrInvalidParams]. Params are read-only once in use and safe
// for concurrent use.
type Params struct {
	// Origin is the log's checkpoint origin; it is also bound into every
	// signed change and account statement.
	Origin string
	// LogVerifier verifies the log's checkpoint signatures. Its name must
	// be Origin.
	LogVerifier note.Verifier
	// VRFKey is the directory's VRF public key: the pinned one, or the
	// latest one the client accepted by a rotation (design.md 11.2).
	VRFKey *vrf.PublicKey
	// PrevVRFKeys are the VRF keys before VRFKey in the rotation chain,
	// oldest first (empty before any VRF rotation). Lookups after a
	// rotation verify moved records and the fallback of handles not moved
	// yet under them (design.md 11.2).
	PrevVRFKeys []*vrf.PublicKey
	// RecoveryKey is the directory's Ed25519 account-recovery key: changes
	// it signs (kind 4) are always reported to the owner as alerts.
	RecoveryKey [32]byte
	// Witnesses is the witness policy a checkpoint's cosignatures must
	// satisfy. nil, or a policy with "quorum none", requires no
	// cosignatures and is refused unless InsecureNoWitnesses is set.
	Witnesses *witness.Policy
	// InsecureNoWitnesses accepts checkpoints without any witness
	// cosignature. Only for tests and development: without witnesses a
	// directory can show this client a split view (A4) undetected.
	InsecureNoWitnesses bool
	// MaxAge bounds the age of an accepted epoch: its timestamp and its
	// witness quorum time must be within MaxAge + Skew of the clock. Zero
	// means DefaultMaxAge.
	MaxAge time.Duration
	// Skew is the clock skew tolerated in both directions. Zero means
	// DefaultSkew.
	Skew time.Duration
	// Audit is the audit policy (design.md 14.1, parsed by
	// witness.ParseAuditPolicy from Parameters.audit_policy): a quorum of
	// its auditors must have signed an audit statement on every accepted
	// epoch checkpoint ([ErrAuditQuorum]). nil means no audit mode. Its
	// keys must not be keys of Witnesses, and "quorum none" is refused.
	Audit *witness.Policy
	// MaxAuditLag bounds, in audit mode, the age of an accepted epoch:
	// its timestamp must be within MaxAuditLag + Skew of the clock
	// ([ErrAuditLag]). Zero means DefaultMaxAuditLag. Unused without
	// Audit.
	MaxAuditLag time.Duration

	// logKey is the raw Ed25519 log key (NewParams sets it), the start of
	// the chain of log key rotations; rot is set by WithRotations.
	logKey [32]byte
	rot    *rotationState
}

// Options are the client-side settings of [NewParams]: what the directory
// does not decide.
type Options struct {
	// MaxAge and Skew: see [Params]. Zero means the default.
	MaxAge, Skew time.Duration
	// InsecureNoWitnesses: see [Params].
	InsecureNoWitnesses bool
	// MaxAuditLag: see [Params]. Zero means the default.
	MaxAuditLag time.Duration
}

// NewParams builds and validates Params from the directory's published
// parameters. A client that pins parameters must compare pb with its pinned
// copy itself; this function only decodes and checks them.
//
// SPEC(design.md 4)
// SPEC(design.md 11)
func NewParams(pb *ktpb.Parameters, opts Options) (*Params, error) {
	bad := func(format string, args ...any) (*Params, error) {
		return nil, fail(StepParams, ErrInvalidParams, nil, format, args...)
	}
	if pb == nil {
		return bad("no parameters")
	}
	p := &Params{
		Origin:              pb.GetOrigin(),
		MaxAge:              opts.MaxAge,
		Skew:                opts.Skew,
		InsecureNoWitnesses: opts.InsecureNoWitnesses,
		MaxAuditLag:         opts.MaxAuditLag,
	}
	v, err := note.NewVerifier(pb.GetLogPublicKey())
	if err != nil {
		return nil, fail(StepParams, ErrInvalidParams, err, "log public key %q", pb.GetLogPublicKey())
	}
	p.LogVerifier = v
	if raw := vkeyPublicKey(pb.GetLogPublicKey()); len(raw) == 32 {
		p.logKey = [32]byte(raw)
	}
	if raw := vkeyPublicKey(pb.GetLogPublicKey()); raw != nil {
		// The same key and verdicts, with the key expanded once.
		if fv, err := newFastVerifier(v.Name(), v.KeyHash(), raw); err == nil {
			p.LogVerifier = fv
		}
	}
	if p.VRFKey, err = vrf.ParsePublicKey(pb.GetVrfPublicKey()); err != nil {
		return nil, fail(StepParams, ErrInvalidParams, err, "VRF public key")
	}
	if len(pb.GetRecoveryPublicKey()) != 32 {
		return bad("recovery public key has %d bytes, want 32", len(pb.GetRecoveryPublicKey()))
	}
	copy(p.RecoveryKey[:], pb.GetRecoveryPublicKey())
	if text := pb.GetWitnessPolicy(); text != "" {
		if p.Witnesses, err = witness.ParsePolicy([]byte(text)); err != nil {
			return nil, fail(StepParams, ErrInvalidParams, err, "")
		}
	}
	if text := pb.GetAuditPolicy(); text != "" {
		// SPEC(design.md 14.1)
		if p.Audit, err = witness.ParseAuditPolicy([]byte(text)); err != nil {
			return nil, fail(StepParams, ErrInvalidParams, err, "audit policy")
		}
	}
	// SPEC(design.md 4): "Keys of different roles MUST be distinct keys."
	logKey := vkeyPublicKey(pb.GetLogPublicKey())
	vrfKey := p.VRFKey.Bytes()
	switch {
	case bytes.Equal(logKey, p.RecoveryKey[:]):
		return bad("the recovery key is the log key")
	case bytes.Equal(vrfKey, p.RecoveryKey[:]):
		return bad("the recovery key is the VRF key")
	case bytes.Equal(vrfKey, logKey):
		return bad("the VRF key is the log key")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// vkeyPublicKey returns the raw Ed25519 key of a note verifier key
// "name+hash+base64(0x01 || key)", or nil. Names never contain '+', but the
// base64 may, so the key is everything after the second '+'.
func vkeyPublicKey(vkey string) []byte {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 33 {
		return nil
	}
	return raw[1:]
}

// Validate reports whether p is complete and consistent; errors wrap
// [ErrInvalidParams].
func (p *Params) Validate() error { return p.validate(false) }

// validate is Validate; for an observer ([VerifyObserved]) the VRF key is
// not needed and the recovery key may be zero.
//
// SPEC(design.md 4)
// SPEC(design.md 9.1)
// SPEC(design.md 11)
func (p *Params) validate(observer bool) error {
	bad := func(format string, args ...any) error {
		return fail(StepParams, ErrInvalidParams, nil, format, args...)
	}
	switch {
	case p == nil:
		return bad("no parameters")
	case p.Origin == "":
		return bad("empty origin")
	case len(p.Origin) > 0xffff:
		return bad("origin longer than 65535 bytes")
	case strings.ContainsAny(p.Origin, "\n+ "):
		return bad("origin %q contains a newline, a plus or a space", p.Origin)
	case p.LogVerifier == nil:
		return bad("no log verifier")
	case p.LogVerifier.Name() != p.Origin:
		// SPEC(design.md 4): checkpoint signatures use "key name = origin".
		return bad("log key name %q is not the origin %q", p.LogVerifier.Name(), p.Origin)
	case p.VRFKey == nil && !observer:
		return bad("no VRF key")
	case p.RecoveryKey == [32]byte{} && !observer:
		return bad("no recovery key")
	case p.MaxAge < 0 || p.Skew < 0 || p.MaxAuditLag < 0:
		return bad("negative MaxAge, Skew or MaxAuditLag")
	}
	if p.Audit != nil {
		// SPEC(design.md 14.1): "An audit key must never be a witness key."
		if err := witness.CheckDisjoint(p.Witnesses, p.Audit); err != nil {
			return fail(StepParams, ErrInvalidParams, err, "")
		}
		// SPEC(design.md 14.1): an audit policy that requires no statement
		// would vouch for nothing.
		if p.Audit.QuorumNone() {
			return bad("the audit policy requires no audit statement (quorum none)")
		}
		if err := p.checkLogs("audit", p.Audit); err != nil {
			return err
		}
	}
	if p.Witnesses == nil || p.Witnesses.QuorumNone() {
		// SPEC(design.md 9.1): "quorum none is for tests; clients MUST
		// refuse it unless explicitly run insecurely."
		if !p.InsecureNoWitnesses {
			return bad("the witness policy requires no cosignatures, so nothing stops the directory from showing different users different logs; refusing (for development only: kt --insecure-no-witnesses, or client.Options.InsecureNoWitnesses)")
		}
		return nil
	}
	return p.checkLogs("witness", p.Witnesses)
}

// checkLogs fails when policy lists logs but not this log's key.
//
// SPEC(design.md 9.1)
func (p *Params) checkLogs(kind string, policy *witness.Policy) error {
	logs := policy.Logs()
	if len(logs) == 0 {
		return nil
	}
	// SPEC(design.md 11.1): policies name the pinned log key; a rotated
	// client checks them against it.
	lv := p.LogVerifier
	if p.rot != nil {
		lv = p.rot.pinnedLog
	}
	for _, l := range logs {
		v := l.Verifier()
		if v.Name() == lv.Name() && v.KeyHash() == lv.KeyHash() {
			return nil
		}
	}
	return fail(StepParams, ErrInvalidParams, nil, "the %s policy lists logs, but not this log's key", kind)
}

func (p *Params) maxAge() time.Duration {
	if p.MaxAge == 0 {
		return DefaultMaxAge
	}
	return p.MaxAge
}

func (p *Params) maxAuditLag() time.Duration {
	if p.MaxAuditLag == 0 {
		return DefaultMaxAuditLag
	}
	return p.MaxAuditLag
}

func (p *Params) skew() time.Duration {
	if p.Skew == 0 {
		return DefaultSkew
	}
	return p.Skew
}

// hashes checks that every element of a proof is a 32-byte hash.
func hashes(what string, p [][]byte) error {
	for i, h := range p {
		if len(h) != 32 {
			return fail(StepParse, ErrMalformed, nil, "%s hash %d has %d bytes, want 32", what, i, len(h))
		}
	}
	return nil
}

// maxProofHashes bounds the hashes of an RFC 6962 proof (inclusion: at most
// 64; consistency: at most 2·64), before any work is done on them.
const maxProofHashes = 128

func checkProof(what string, p [][]byte) error {
	if len(p) > maxProofHashes {
		return fail(StepParse, ErrMalformed, nil, "%s has %d hashes, more than %d", what, len(p), maxProofHashes)
	}
	return hashes(what, p)
}

// fastVerifier is an Ed25519 signed-note verifier (key type 0x01) with the
// public key decompressed and its tables precomputed once: the log key is
// pinned and verifies one checkpoint per epoch. It uses curve25519-voi's
// crypto/ed25519-compatible rules (cofactorless, canonical S), so its
// verdicts are those of note.NewVerifier's.
type fastVerifier struct {
	name string
	hash uint32
	key  *voi.ExpandedPublicKey
}

var voiStdLib = &voi.Options{Verify: voi.VerifyOptionsStdLib}

func newFastVerifier(name string, hash uint32, key []byte) (*fastVerifier, error) {
	k, err := voi.NewExpandedPublicKey(voi.PublicKey(key))
	if err != nil {
		return nil, err
	}
	return &fastVerifier{name: name, hash: hash, key: k}, nil
}

func (v *fastVerifier) Name() string    { return v.name }
func (v *fastVerifier) KeyHash() uint32 { return v.hash }
func (v *fastVerifier) Verify(msg, sig []byte) bool {
	return len(sig) == voi.SignatureSize && voi.VerifyExpandedWithOptions(v.key, msg, sig, voiStdLib)
}
