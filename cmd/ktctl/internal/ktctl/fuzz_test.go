package ktctl_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/log/witness"
	"github.com/keytrans/kt/smt"
)

const fuzzOrigin = "fuzz.example/kt"

// fuzzKeys returns fixed keys, so that seeds stay valid across runs.
func fuzzKeys(tb testing.TB) (note.Signer, *ktctl.Keys) {
	tb.Helper()
	seed := sha256.Sum256([]byte("ktctl fuzz log key"))
	priv := ed25519.NewKeyFromSeed(seed[:])
	vkey, err := note.NewEd25519VerifierKey(fuzzOrigin, priv.Public().(ed25519.PublicKey))
	if err != nil {
		tb.Fatal(err)
	}
	skey := "PRIVATE+KEY+" + vkey[:len(fuzzOrigin)+1+8] + "+" + b64(append([]byte{1}, seed[:]...))
	s, err := note.NewSigner(skey)
	if err != nil {
		tb.Fatal(err)
	}
	v, _ := note.NewVerifier(vkey)
	return s, &ktctl.Keys{Origin: fuzzOrigin, LogVerifier: v, LogVerifierKey: vkey}
}

// validMonitorResponse builds a genuine monitoring answer over an
// in-memory log: epoch 0, one enrollment, epoch 1.
func validMonitorResponse(tb testing.TB) ([32]byte, *ktpb.MonitorResponse) {
	tb.Helper()
	signer, _ := fuzzKeys(tb)
	ctx := context.Background()
	index := sha256.Sum256([]byte("index"))
	dseed := sha256.Sum256([]byte("device"))
	dk := ed25519.NewKeyFromSeed(dseed[:])
	set := &api.DeviceSet{Devices: []api.Device{{Suite: api.SuiteX25519, HPKEKey: make([]byte, 32), SigningKey: [32]byte(dk.Public().(ed25519.PublicKey))}}}
	sb, err := set.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	var opening [32]byte
	rec := &api.ChangeRecord{Index: index, Version: 1, Commitment: api.Commit(opening, index, 1, sb), Kind: api.AuthEnroll, Authorizers: set.Authorizers()}
	rec.Sign(fuzzOrigin, dk)
	rb, _ := rec.MarshalBinary()
	m, err := smt.New([]smt.Leaf{{Key: index, Value: api.LeafHash(rb)}})
	if err != nil {
		tb.Fatal(err)
	}
	e0, _ := (&api.EpochRecord{}).MarshalBinary()
	e1, _ := (&api.EpochRecord{Epoch: 1, Timestamp: 1, LogSize: 2, MapRoot: m.Root(), MapSize: 1}).MarshalBinary()
	l := conformance.NewMemoryLog(fuzzOrigin, signer)
	if _, err := l.Append(ctx, [][]byte{e0, rb, e1}); err != nil {
		tb.Fatal(err)
	}
	cp, _ := l.Checkpoint(ctx)
	ep, _ := l.InclusionProof(ctx, 2, 3)
	cincl, _ := l.InclusionProof(ctx, 1, 3)
	p, _ := m.Prove(index)
	mp, _ := p.MarshalBinary()
	return index, &ktpb.MonitorResponse{
		Epoch:    &ktpb.EpochPart{Checkpoint: cp, EpochRecord: e1, InclusionProof: ep},
		MapProof: mp,
		Changes:  []*ktpb.MonitoredChange{{ChangeRecord: rb, LogIndex: 1, InclusionProof: cincl, Opening: opening[:], DeviceSet: sb}},
	}
}

// FuzzVerifyMonitor feeds arbitrary Monitor answers to the verifier diff
// relies on: it must never panic, and must accept only answers that
// verify.
func FuzzVerifyMonitor(f *testing.F) {
	_, k := fuzzKeys(f)
	index, good := validMonitorResponse(f)
	if _, err := ktctl.VerifyMonitor(k, index, good); err != nil {
		f.Fatalf("the seed does not verify: %v", err)
	}
	b, _ := proto.Marshal(good)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r ktpb.MonitorResponse
		if proto.Unmarshal(b, &r) != nil {
			return
		}
		vh, err := ktctl.VerifyMonitor(k, index, &r)
		if err == nil && (vh == nil || len(vh.Changes) != len(r.GetChanges())) {
			t.Fatalf("accepted with result %+v", vh)
		}
	})
}

// FuzzVerifyCheckpoint feeds arbitrary notes to the checkpoint verifier,
// with a policy, so that its own cosignature decoding is exercised.
func FuzzVerifyCheckpoint(f *testing.F) {
	_, k := fuzzKeys(f)
	_, good := validMonitorResponse(f)
	p, err := witness.ParsePolicy([]byte("witness w fuzz-witness+4cc3fb1c+BNhHTd0B0t1zx6GXqC5EF+ZHWVRaTIETTmo6tv6fExk3\nquorum w\n"))
	if err != nil {
		f.Fatalf("policy: %v", err)
	}
	k.Policy = p
	f.Add(good.Epoch.Checkpoint)
	f.Add(append(append([]byte{}, good.Epoch.Checkpoint...), []byte("— fuzz-witness a01O0AAAAABpADDBxxxx\n")...))
	f.Fuzz(func(t *testing.T, b []byte) {
		cp, err := ktctl.VerifyCheckpoint(b, k)
		if err == nil && (cp.Quorum == nil || !cp.Quorum.Satisfied) {
			t.Fatalf("accepted without a satisfied quorum: %+v", cp)
		}
	})
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
