package client_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/smt"
)

const (
	alice  = "+1 (415) 555-0100"
	bob    = "Bob@Example.com"
	carol  = "carol@example.com"
	nobody = "+4930123456"
)

// sentinels are the package's sentinel errors: every failure must match
// exactly one.
var sentinels = []error{
	client.ErrInvalidParams, client.ErrMalformed, client.ErrCheckpointSignature,
	client.ErrWitnessQuorum, client.ErrRollback, client.ErrInconsistent,
	client.ErrNotLatestEpoch, client.ErrEpochInclusion, client.ErrStale,
	client.ErrVRF, client.ErrMapProof, client.ErrRecordMismatch,
	client.ErrCommitment, client.ErrAuthorizers, client.ErrStrict,
	client.ErrUnusableKey, client.ErrMonitorGap,
	client.ErrAuditQuorum, client.ErrAuditLag,
}

// checkErr fails unless err is a *VerifyError matching want and no other
// sentinel.
func checkErr(t *testing.T, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("accepted; want %v", want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("error %v; want %v", err, want)
	}
	var ve *client.VerifyError
	if !errors.As(err, &ve) || ve.Step == "" {
		t.Errorf("error %v is not a *VerifyError with a step", err)
	}
	for _, s := range sentinels {
		if s != want && errors.Is(err, s) {
			t.Errorf("error %v also matches %v", err, s)
		}
	}
}

// fixture: alice (X25519 and hybrid devices) and bob are registered;
// epoch 1 closed at t0+1s; the clock reads t0+3s.
type fixture struct {
	k      *keys
	s      *sim
	p      *client.Params
	a1, a2 *device
	b1     *device
	e1     *epoch
	now    time.Time
	acct   ed25519.PrivateKey // alice's account key, made by account()
	a3, g  *device            // set by monitoring tests
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	k := newKeys(t)
	f := &fixture{k: k, s: newSim(t, k), p: k.params(t)}
	f.a1 = newDevice(t, "a1", api.SuiteX25519)
	f.a2 = newDevice(t, "a2", api.SuiteHybrid)
	f.b1 = newDevice(t, "b1", api.SuiteX25519)
	f.s.change(alice, set(f.a1, f.a2), api.AuthEnroll, f.a1.sign)
	f.s.change(bob, set(f.b1), api.AuthEnroll, f.b1.sign)
	f.e1 = f.s.closeEpoch(epochOpts{ts: t0.Add(time.Second)})
	f.now = t0.Add(3 * time.Second)
	return f
}

// trusted verifies an honest answer and returns the state it yields.
func (f *fixture) trusted(t testing.TB, now time.Time) *client.Trusted {
	t.Helper()
	res, err := client.VerifyLookup(f.p, nil, bob, f.s.lookup(bob, 0), now, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Trusted
}

// input is one VerifyLookup call.
type input struct {
	tr     *client.Trusted
	handle string
	resp   *ktpb.LookupResponse
	now    time.Time
	pinned ed25519.PublicKey
}

// honest is the honest first-contact lookup of alice.
func (f *fixture) honest() *input {
	return &input{handle: alice, resp: clone(f.s.lookup(alice, 0)), now: f.now}
}

func clone[M proto.Message](m M) M { return proto.Clone(m).(M) }

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	if i < 0 {
		i += len(b)
	}
	b[i] ^= 0x01
	return b
}

// sigLines splits a signed note into its text (with the blank line) and
// signature lines.
func sigLines(n []byte) (string, []string) {
	i := bytes.Index(n, []byte("\n\n"))
	lines := strings.SplitAfter(string(n[i+2:]), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return string(n[:i+2]), lines
}

// editSigs rewrites the signature lines of a note.
func editSigs(n []byte, edit func(lines []string) []string) []byte {
	text, lines := sigLines(n)
	return []byte(text + strings.Join(edit(lines), ""))
}

// corrupt flips the last byte of a signature line's signature.
func corrupt(line string) string {
	name, b64, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(line, "— "), "\n"), " ")
	raw, _ := base64.StdEncoding.DecodeString(b64)
	raw[len(raw)-1] ^= 1
	return "— " + name + " " + base64.StdEncoding.EncodeToString(raw) + "\n"
}

// resign replaces the log signature of a checkpoint with signer's,
// keeping the cosignatures.
func resign(t testing.TB, cp []byte, signer note.Signer, text string) []byte {
	t.Helper()
	_, lines := sigLines(cp)
	if text == "" {
		text, _ = sigLines(cp)
		text = strings.TrimSuffix(text, "\n")
	}
	signed, err := note.Sign(&note.Note{Text: text}, signer)
	if err != nil {
		t.Fatal(err)
	}
	return append(signed, []byte(strings.Join(lines[1:], ""))...)
}

func TestVerifyLookup(t *testing.T) {
	tests := []struct {
		name  string
		build func(t *testing.T, f *fixture) *input
		want  error
	}{
		{"honest first contact", func(t *testing.T, f *fixture) *input { return f.honest() }, nil},
		{"honest within the trusted epoch", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.tr = f.trusted(t, f.now)
			in.resp = clone(f.s.lookup(alice, in.tr.Size))
			if in.resp.Epoch != nil {
				t.Fatal("simulator sent an epoch part")
			}
			return in
		}, nil},
		{"honest, epoch part repeats the trusted checkpoint", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.tr = f.trusted(t, f.now)
			return in
		}, nil},
		{"honest after a new epoch, with a consistency proof", func(t *testing.T, f *fixture) *input {
			tr := f.trusted(t, f.now)
			f.enrollCarol(t)
			f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
			in := f.honest()
			in.tr = tr
			in.resp = clone(f.s.lookup(alice, tr.Size))
			if len(in.resp.Epoch.ConsistencyProof) == 0 {
				t.Fatal("no consistency proof")
			}
			return in
		}, nil},

		// Step 1: parsing.
		{"no epoch part and nothing trusted", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.Epoch = nil
			return in
		}, client.ErrMalformed},
		{"epoch record truncated", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.Epoch.EpochRecord = in.resp.Epoch.EpochRecord[:65]
			return in
		}, client.ErrMalformed},
		{"inclusion proof hash of 31 bytes", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.Epoch.InclusionProof[0] = in.resp.Epoch.InclusionProof[0][:31]
			return in
		}, client.ErrMalformed},
		{"checkpoint is not a note", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.Epoch.Checkpoint = []byte("hello")
			return in
		}, client.ErrMalformed},
		{"checkpoint with an extension line", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			text, _ := sigLines(in.resp.Epoch.Checkpoint)
			in.resp.Epoch.Checkpoint = resign(t, in.resp.Epoch.Checkpoint, f.k.logSigner, strings.TrimSuffix(text, "\n")+"extension\n")
			return in
		}, client.ErrMalformed},
		{"consistency proof without a trusted checkpoint", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.Epoch.ConsistencyProof = [][]byte{make([]byte, 32)}
			return in
		}, client.ErrMalformed},
		{"VRF proof truncated", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.VrfProof = in.resp.VrfProof[:79]
			return in
		}, client.ErrMalformed},
		{"map proof truncated", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.MapProof = in.resp.MapProof[:len(in.resp.MapProof)-1]
			return in
		}, client.ErrMalformed},
		{"change record truncated", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.ChangeRecord = in.resp.ChangeRecord[:len(in.resp.ChangeRecord)-1]
			return in
		}, client.ErrMalformed},
		{"opening of 31 bytes", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.Opening = in.resp.Opening[:31]
			return in
		}, client.ErrMalformed},
		{"record without its device set", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.DeviceSet = nil
			return in
		}, client.ErrMalformed},
		{"device set with trailing bytes", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.DeviceSet = append(in.resp.DeviceSet, 0)
			return in
		}, client.ErrMalformed},

		// Step 2.1: the log signature.
		{"checkpoint log signature corrupted", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.Epoch.Checkpoint = editSigs(in.resp.Epoch.Checkpoint, func(l []string) []string {
				l[0] = corrupt(l[0])
				return l
			})
			return in
		}, client.ErrCheckpointSignature},
		{"checkpoint signed by another key of the same name", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			skey, _, _ := note.GenerateKey(rand.Reader, testOrigin)
			other, _ := note.NewSigner(skey)
			in.resp.Epoch.Checkpoint = resign(t, in.resp.Epoch.Checkpoint, other, "")
			return in
		}, client.ErrCheckpointSignature},
		{"checkpoint for another origin, signed by the log key", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			text, _ := sigLines(in.resp.Epoch.Checkpoint)
			text = strings.Replace(strings.TrimSuffix(text, "\n"), testOrigin, "other.example/kt", 1)
			in.resp.Epoch.Checkpoint = resign(t, in.resp.Epoch.Checkpoint, f.k.logSigner, text)
			return in
		}, client.ErrCheckpointSignature},

		// Step 2.2: witnesses.
		{"one cosignature corrupted", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.Epoch.Checkpoint = editSigs(in.resp.Epoch.Checkpoint, func(l []string) []string {
				l[2] = corrupt(l[2])
				return l
			})
			return in
		}, client.ErrWitnessQuorum},
		{"one cosignature short of the quorum", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.Epoch.Checkpoint = editSigs(in.resp.Epoch.Checkpoint, func(l []string) []string { return l[:2] })
			return in
		}, client.ErrWitnessQuorum},
		{"two of three cosignatures suffice", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.Epoch.Checkpoint = editSigs(in.resp.Epoch.Checkpoint, func(l []string) []string { return []string{l[0], l[1], l[3]} })
			return in
		}, nil},
		{"cosignatures by unknown witnesses do not count", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			text, _ := sigLines(in.resp.Epoch.Checkpoint)
			text = strings.TrimSuffix(text, "\n")
			x, y := newCosigner(t, "w1.example"), newCosigner(t, "x.example")
			in.resp.Epoch.Checkpoint = editSigs(in.resp.Epoch.Checkpoint, func(l []string) []string {
				return []string{l[0], l[1], x.Sign(text, uint64(t0.Unix())), y.Sign(text, uint64(t0.Unix()))}
			})
			return in
		}, client.ErrWitnessQuorum},
		{"a cosignature dated in the future", func(t *testing.T, f *fixture) *input {
			f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second), cosigned: []time.Time{t0.Add(2 * time.Second), t0.Add(2 * time.Second), t0.Add(time.Hour)}})
			return f.honest()
		}, client.ErrWitnessQuorum},

		// Step 2.3: append-only.
		{"rollback to an older epoch", func(t *testing.T, f *fixture) *input {
			f.enrollCarol(t)
			f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
			in := f.honest()
			in.tr = f.trusted(t, f.now) // at epoch 2
			in.resp = clone(f.s.lookupAt(f.e1, alice, 0))
			return in
		}, client.ErrRollback},
		{"consistency proof corrupted", func(t *testing.T, f *fixture) *input {
			tr := f.trusted(t, f.now)
			f.enrollCarol(t)
			f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
			in := f.honest()
			in.tr = tr
			in.resp = clone(f.s.lookup(alice, tr.Size))
			in.resp.Epoch.ConsistencyProof[0] = flip(in.resp.Epoch.ConsistencyProof[0], 0)
			return in
		}, client.ErrInconsistent},
		{"consistency proof missing", func(t *testing.T, f *fixture) *input {
			tr := f.trusted(t, f.now)
			f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
			in := f.honest()
			in.tr = tr
			in.resp = clone(f.s.lookup(alice, tr.Size))
			in.resp.Epoch.ConsistencyProof = nil
			return in
		}, client.ErrInconsistent},

		// Step 2.4: the epoch record is the last entry.
		{"epoch record not the checkpoint's last entry", func(t *testing.T, f *fixture) *input {
			// A change follows epoch 1 in the log; the directory serves
			// the newer, cosigned checkpoint with epoch 1's record.
			f.s.change(alice, set(f.a1), api.AuthDevice, f.a1.sign)
			size := f.s.size()
			in := f.honest()
			in.resp.Epoch.Checkpoint = f.s.cosign(f.s.checkpoint(), t0.Add(2*time.Second), nil)
			in.resp.Epoch.InclusionProof = f.s.inclusion(f.e1.size-1, size)
			return in
		}, client.ErrNotLatestEpoch},
		{"epoch inclusion proof corrupted", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.Epoch.InclusionProof[0] = flip(in.resp.Epoch.InclusionProof[0], 5)
			return in
		}, client.ErrEpochInclusion},
		{"epoch inclusion proof shortened", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.Epoch.InclusionProof = in.resp.Epoch.InclusionProof[1:]
			return in
		}, client.ErrEpochInclusion},
		{"epoch record with another map root", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.Epoch.EpochRecord = flip(in.resp.Epoch.EpochRecord, 30)
			return in
		}, client.ErrEpochInclusion},

		// Step 2.5: freshness.
		{"epoch at the freshness bound", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.now = f.e1.time().Add(70 * time.Second)
			return in
		}, nil},
		{"stale epoch", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.now = f.e1.time().Add(70*time.Second + time.Millisecond)
			return in
		}, client.ErrStale},
		{"epoch timestamp in the future", func(t *testing.T, f *fixture) *input {
			f.s.closeEpoch(epochOpts{ts: f.now.Add(11 * time.Second), cosigned: []time.Time{f.now, f.now, f.now}})
			return f.honest()
		}, client.ErrStale},
		{"stale witness quorum on a fresh epoch", func(t *testing.T, f *fixture) *input {
			old := f.now.Add(-71 * time.Second)
			f.s.closeEpoch(epochOpts{ts: f.now, cosigned: []time.Time{old, old, f.now}})
			return f.honest()
		}, client.ErrStale},
		{"trusted epoch gone stale, no epoch part", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.tr = f.trusted(t, f.now)
			in.resp = clone(f.s.lookup(alice, in.tr.Size))
			in.now = f.now.Add(2 * time.Minute)
			return in
		}, client.ErrStale},
		{"epoch number goes back", func(t *testing.T, f *fixture) *input {
			tr := f.trusted(t, f.now)
			zero := uint64(0)
			f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second), number: &zero})
			in := f.honest()
			in.tr = tr
			in.resp = clone(f.s.lookup(alice, tr.Size))
			return in
		}, client.ErrStale},

		// Step 3: VRF.
		{"VRF proof corrupted", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.VrfProof = flip(in.resp.VrfProof, 40)
			return in
		}, client.ErrVRF},
		{"VRF proof of another handle", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.VrfProof = f.s.lookup(bob, 0).VrfProof
			return in
		}, client.ErrVRF},

		// Step 4: map.
		{"map proof sibling corrupted", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.MapProof = flip(in.resp.MapProof, -2)
			return in
		}, client.ErrMapProof},
		{"map proof of another handle", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.MapProof = f.s.lookup(bob, 0).MapProof
			return in
		}, client.ErrMapProof},
		{"registered handle answered as absent", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.ChangeRecord, in.resp.Opening, in.resp.DeviceSet = nil, nil, nil
			return in
		}, client.ErrMapProof},
		{"absent handle answered with another handle's record", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.handle = nobody
			in.resp = clone(f.s.lookup(nobody, 0))
			b := f.s.lookup(bob, 0)
			in.resp.ChangeRecord, in.resp.Opening, in.resp.DeviceSet = b.ChangeRecord, b.Opening, b.DeviceSet
			return in
		}, client.ErrMapProof},
		{"stale record under the latest map (A3)", func(t *testing.T, f *fixture) *input {
			old := f.s.lookup(alice, 0)
			f.s.change(alice, set(f.a1), api.AuthDevice, f.a1.sign) // a2 revoked
			f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
			in := f.honest()
			in.resp.ChangeRecord, in.resp.Opening, in.resp.DeviceSet = old.ChangeRecord, old.Opening, old.DeviceSet
			return in
		}, client.ErrMapProof},

		// Step 5: the record's index.
		{"answer for another handle", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp = clone(f.s.lookup(bob, 0))
			return in
		}, client.ErrRecordMismatch},
		{"map holds another handle's record at this index", func(t *testing.T, f *fixture) *input {
			// A dishonest map (the auditor's A6): alice's index maps to
			// bob's record, whose devices would receive alice's mail.
			ai, bi := f.s.handle(alice).index, f.s.handle(bob).index
			f.s.pending = append(f.s.pending, smt.Update{Key: ai, Value: f.s.latest[bi].leaf})
			f.s.latest[ai] = f.s.latest[bi]
			f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
			return f.honest()
		}, client.ErrRecordMismatch},

		// Step 6: commitment and R7.
		{"opening corrupted", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.Opening = flip(in.resp.Opening, 0)
			return in
		}, client.ErrCommitment},
		{"ghost device added to the set (A1)", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.DeviceSet = mustMarshal(t, set(f.a1, f.a2, newDevice(t, "ghost", api.SuiteX25519)))
			return in
		}, client.ErrCommitment},
		{"device removed from the set", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.DeviceSet = mustMarshal(t, set(f.a1))
			return in
		}, client.ErrCommitment},
		{"logged authorizers hide a device (R7)", func(t *testing.T, f *fixture) *input {
			h, c := f.s.record(alice, set(f.a1, f.a2), api.AuthDevice, f.a1.sign, func(r *api.ChangeRecord) {
				r.Authorizers = r.Authorizers[:1]
			})
			f.s.logChange(h, c)
			f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
			return f.honest()
		}, client.ErrAuthorizers},

		// Step 7: strict mode.
		{"strict: signed by the pinned account key", func(t *testing.T, f *fixture) *input {
			return f.strict(t, accountSigned, f.account(t))
		}, nil},
		{"strict: signed by another account key", func(t *testing.T, f *fixture) *input {
			pub, _, _ := ed25519.GenerateKey(rand.Reader)
			return f.strict(t, accountSigned, pub)
		}, client.ErrStrict},
		{"strict: no account key", func(t *testing.T, f *fixture) *input {
			return f.strict(t, accountNone, f.account(t))
		}, client.ErrStrict},
		{"strict: account signature replayed from another version", func(t *testing.T, f *fixture) *input {
			return f.strict(t, accountReplayed, f.account(t))
		}, client.ErrStrict},
		{"strict: account signature corrupted", func(t *testing.T, f *fixture) *input {
			return f.strict(t, accountCorrupted, f.account(t))
		}, client.ErrStrict},
		{"strict: absent handle", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.handle = nobody
			in.resp = clone(f.s.lookup(nobody, 0))
			in.pinned = f.account(t)
			return in
		}, nil},

		// Step 8: HPKE keys.
		{"P-256 key not on the curve", func(t *testing.T, f *fixture) *input {
			d := newDevice(t, "p256", api.HPKESuite{KEM: api.KEMP256HKDFSHA256, KDF: api.KDFHKDFSHA256, AEAD: api.AEADAES128GCM})
			d.dev.HPKEKey = append([]byte{4}, bytes.Repeat([]byte{0xff}, 64)...)
			f.s.change(alice, set(f.a1, d), api.AuthDevice, f.a1.sign)
			f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
			return f.honest()
		}, client.ErrUnusableKey},
		{"ML-KEM-768 key out of range", func(t *testing.T, f *fixture) *input {
			d := newDevice(t, "mlkem", api.HPKESuite{KEM: api.KEMMLKEM768, KDF: api.KDFHKDFSHA256, AEAD: api.AEADAES128GCM})
			d.dev.HPKEKey = bytes.Repeat([]byte{0xff}, 1184)
			f.s.change(alice, set(f.a1, d), api.AuthDevice, f.a1.sign)
			f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
			return f.honest()
		}, client.ErrUnusableKey},
		{"device set truncated", func(t *testing.T, f *fixture) *input {
			in := f.honest()
			in.resp.DeviceSet = in.resp.DeviceSet[:len(in.resp.DeviceSet)-2]
			return in
		}, client.ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			in := tc.build(t, f)
			var before []byte
			if in.tr != nil {
				before = mustMarshal(t, in.tr)
			}
			res, err := client.VerifyLookup(f.p, in.tr, in.handle, in.resp, in.now, in.pinned)
			if err != nil {
				t.Logf("error: %v", err)
			}
			checkErr(t, err, tc.want)
			if in.tr != nil && !bytes.Equal(before, mustMarshal(t, in.tr)) {
				t.Error("VerifyLookup modified the trusted state it was given")
			}
			if err != nil {
				return
			}
			checkResult(t, f, in, res)
		})
	}
}

// checkResult compares an accepted answer with what the simulator holds.
func checkResult(t *testing.T, f *fixture, in *input, res *client.LookupResult) {
	t.Helper()
	canon, _ := api.NormalizeHandle(in.handle)
	h := f.s.handle(canon)
	if res.Handle != canon || res.Index != h.index {
		t.Errorf("result for %q/%x, want %q/%x", res.Handle, res.Index[:4], canon, h.index[:4])
	}
	ep := f.s.ep()
	c := ep.latest[h.index]
	if c == nil {
		if res.Registered || res.DeviceSet != nil || res.Recipients != nil {
			t.Errorf("absent handle returned as registered")
		}
	} else {
		if !res.Registered || res.Version != c.record.Version || res.Kind != c.record.Kind || res.LeafHash != c.leaf {
			t.Errorf("result version %d kind %v, want %d %v", res.Version, res.Kind, c.record.Version, c.record.Kind)
		}
		if got := mustMarshal(t, res.DeviceSet); !bytes.Equal(got, c.set) {
			t.Errorf("device set differs from the logged one")
		}
		if len(res.Recipients) != len(res.DeviceSet.Devices) {
			t.Fatalf("%d recipients for %d devices", len(res.Recipients), len(res.DeviceSet.Devices))
		}
		for i, r := range res.Recipients {
			if !bytes.Equal(r.PublicKey.Bytes(), r.Device.HPKEKey) || r.PublicKey.KEM().ID() != r.Device.Suite.KEM {
				t.Errorf("recipient %d: key does not match the device", i)
			}
		}
	}
	cp := ep.checkpoint
	if in.resp.Epoch != nil {
		cp = in.resp.Epoch.Checkpoint // as received, possibly with fewer cosignatures
	}
	want := &client.Trusted{Checkpoint: cp, Size: ep.size, Epoch: ep.record}
	got := *res.Trusted
	got.QuorumTime = time.Time{}
	copy(want.Root[:], rootOf(t, ep.checkpoint))
	if diff := cmp.Diff(want, &got); diff != "" {
		t.Errorf("trusted state (-want +got):\n%s", diff)
	}
}

func rootOf(t *testing.T, cp []byte) []byte {
	t.Helper()
	text, _ := sigLines(cp)
	lines := strings.Split(text, "\n")
	b, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *epoch) time() time.Time { return time.UnixMilli(int64(e.record.Timestamp)) }

type accountMode int

const (
	accountSigned accountMode = iota
	accountNone
	accountReplayed
	accountCorrupted
)

// account returns (creating it once) alice's account key.
func (f *fixture) account(t *testing.T) ed25519.PublicKey {
	if f.acct == nil {
		_, f.acct, _ = ed25519.GenerateKey(rand.Reader)
	}
	return f.acct.Public().(ed25519.PublicKey)
}

// strict logs alice's version 2 with the account key as mode says, and
// returns the lookup with pinned as the pinned key.
func (f *fixture) strict(t *testing.T, mode accountMode, pinned ed25519.PublicKey) *input {
	f.account(t)
	h := f.s.handle(alice)
	s := set(f.a1, f.a2)
	switch mode {
	case accountSigned:
		s.SignAccount(testOrigin, h.index, 2, f.acct)
	case accountReplayed:
		s.SignAccount(testOrigin, h.index, 1, f.acct)
	case accountCorrupted:
		s.SignAccount(testOrigin, h.index, 2, f.acct)
		s.Account.Signature[0] ^= 1
	}
	f.s.change(alice, s, api.AuthDevice, f.a1.sign)
	f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
	in := f.honest()
	in.pinned = pinned
	return in
}

func (f *fixture) enrollCarol(t testing.TB) {
	c1 := newDevice(t, "c1", api.SuiteX25519)
	f.s.change(carol, set(c1), api.AuthEnroll, c1.sign)
}

func TestInconsistent(t *testing.T) {
	for _, tc := range []struct {
		name      string
		moreEpoch bool
	}{{"same size, other root", false}, {"larger fork, proof from the fork", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tr := f.trusted(t, f.now)
			// The same directory keys, another history: a fork shown to
			// this client (A4, A5), cosigned by a dishonest quorum.
			fork := newSim(t, f.k)
			m := newDevice(t, "m", api.SuiteX25519)
			fork.change(alice, set(m), api.AuthEnroll, m.sign)
			fork.change(carol, set(m), api.AuthEnroll, m.sign)
			fork.closeEpoch(epochOpts{ts: t0.Add(time.Second)})
			if fork.ep().size != tr.Size {
				t.Fatalf("fork size %d, trusted %d", fork.ep().size, tr.Size)
			}
			if tc.moreEpoch {
				fork.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
			}
			resp := fork.lookup(alice, tr.Size)
			if resp.Epoch == nil { // same size: send the fork's epoch anyway
				resp.Epoch = fork.epochPart(fork.ep(), tr.Size)
			}
			_, err := client.VerifyLookup(f.p, tr, alice, resp, f.now, nil)
			checkErr(t, err, client.ErrInconsistent)
			var ie *client.InconsistencyError
			if !errors.As(err, &ie) {
				t.Fatalf("%v is not an *InconsistencyError", err)
			}
			// The evidence: both checkpoints, signed by the log key, and
			// the proof as received.
			if !bytes.Equal(ie.Trusted, tr.Checkpoint) || !bytes.Equal(ie.New, fork.ep().checkpoint) {
				t.Error("evidence does not carry both checkpoints")
			}
			if ie.TrustedSize != tr.Size || ie.NewSize != fork.ep().size {
				t.Errorf("evidence sizes %d, %d", ie.TrustedSize, ie.NewSize)
			}
			if diff := cmp.Diff(resp.Epoch.GetConsistencyProof(), ie.Proof); diff != "" {
				t.Errorf("evidence proof (-sent +kept):\n%s", diff)
			}
			v, _ := note.NewVerifier(f.k.logVKey)
			for _, cp := range [][]byte{ie.Trusted, ie.New} {
				if _, _, err := log.ParseCheckpoint(cp, testOrigin, v); err != nil {
					t.Errorf("evidence checkpoint does not verify offline: %v", err)
				}
			}
		})
	}
}

func TestTombstoneAndAbsent(t *testing.T) {
	f := newFixture(t)
	f.s.change(alice, &api.DeviceSet{AccountID: accountID}, api.AuthDevice, f.a1.sign)
	f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
	res, err := client.VerifyLookup(f.p, nil, alice, f.s.lookup(alice, 0), f.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Registered || !res.DeviceSet.IsTombstone() || len(res.Recipients) != 0 || res.Version != 2 {
		t.Errorf("tombstone: registered %v, %d devices, version %d", res.Registered, len(res.Recipients), res.Version)
	}
	res, err = client.VerifyLookup(f.p, res.Trusted, nobody, f.s.lookup(nobody, res.Trusted.Size), f.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Registered || res.DeviceSet != nil {
		t.Errorf("absent handle: registered %v", res.Registered)
	}
}

func TestVerifyLookupInEpoch(t *testing.T) {
	f := newFixture(t)
	e, err := client.VerifyEpoch(f.p, nil, f.s.lookup(alice, 0).Epoch, f.now)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{alice, bob, nobody} {
		res, err := client.VerifyLookupInEpoch(f.p, e, h, f.s.lookup(h, f.e1.size), nil)
		if err != nil {
			t.Fatalf("%s: %v", h, err)
		}
		if res.Epoch != e {
			t.Errorf("%s: other epoch", h)
		}
	}
	resp := clone(f.s.lookup(bob, f.e1.size))
	resp.VrfProof = flip(resp.VrfProof, 1)
	_, err = client.VerifyLookupInEpoch(f.p, e, bob, resp, nil)
	checkErr(t, err, client.ErrVRF)
}

func TestInvalidHandle(t *testing.T) {
	f := newFixture(t)
	_, err := client.VerifyLookup(f.p, nil, "4155550100", f.s.lookup(alice, 0), f.now, nil)
	if !errors.Is(err, api.ErrInvalidHandle) {
		t.Fatalf("error %v, want api.ErrInvalidHandle", err)
	}
}

// TestRecipientsEncrypt encrypts to every recipient of a verified answer
// (X25519 and MLKEM768-X25519) and decrypts with the devices' keys.
func TestRecipientsEncrypt(t *testing.T) {
	f := newFixture(t)
	res, err := client.VerifyLookup(f.p, nil, alice, f.s.lookup(alice, 0), f.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[[16]byte]hpke.PrivateKey{f.a1.dev.ID: f.a1.hpke, f.a2.dev.ID: f.a2.hpke}
	if len(res.Recipients) != 2 {
		t.Fatalf("%d recipients", len(res.Recipients))
	}
	for _, r := range res.Recipients {
		ct, err := hpke.Seal(r.PublicKey, r.KDF, r.AEAD, []byte("kt test"), []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		pt, err := hpke.Open(keys[r.Device.ID], r.KDF, r.AEAD, []byte("kt test"), ct)
		if err != nil || string(pt) != "hello" {
			t.Fatalf("KEM 0x%04x: %q, %v", r.Device.Suite.KEM, pt, err)
		}
	}
}
