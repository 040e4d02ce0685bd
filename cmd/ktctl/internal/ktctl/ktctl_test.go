package ktctl_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/ktctltest"
	"github.com/keytrans/kt/log/witness"
)

// wantVerify fails unless err is a *VerifyError for the check what.
func wantVerify(t *testing.T, err error, what string) {
	t.Helper()
	var ve *ktctl.VerifyError
	if !errors.As(err, &ve) || !errors.Is(err, ktctl.ErrVerification) {
		t.Fatalf("error %v, want a *VerifyError for %q", err, what)
	}
	if ve.What != what {
		t.Fatalf("VerifyError for %q (%v), want %q", ve.What, err, what)
	}
}

func keysOf(t *testing.T, f *ktctltest.Fixture, withPolicy bool) *ktctl.Keys {
	t.Helper()
	v, vkey, err := ktctl.DataDirLogKey(f.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	k := &ktctl.Keys{Origin: v.Name(), LogVerifier: v, LogVerifierKey: vkey}
	if withPolicy {
		if k.Policy, err = ktctl.LoadPolicy(f.PolicyFile); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

// TestVerifyMonitor tampers with every part of a real monitoring answer
// that VerifyMonitor checks.
func TestVerifyMonitor(t *testing.T) {
	f := ktctltest.Start(t)
	k := keysOf(t, f, true)
	ctx := context.Background()
	oconn, err := grpc.NewClient(f.OperatorAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer oconn.Close()
	oc := ktpb.NewOperatorClient(oconn)
	index := f.Alice.Index
	good, err := oc.History(ctx, &ktpb.MonitorRequest{Index: index[:]})
	if err != nil {
		t.Fatal(err)
	}
	vh, err := ktctl.VerifyMonitor(k, index, good)
	if err != nil {
		t.Fatalf("VerifyMonitor of the genuine answer: %v", err)
	}
	if len(vh.Changes) != len(f.Alice.Versions) {
		t.Fatalf("%d changes, want %d", len(vh.Changes), len(f.Alice.Versions))
	}
	for i, c := range vh.Changes {
		if c.LogIndex != f.Alice.Versions[i].LogIndex || len(c.DeviceSet.Devices) != len(f.Alice.Versions[i].Set.Devices) {
			t.Errorf("change %d = %+v", i, c)
		}
	}
	// The absent handle: no changes, an absence proof.
	var nobody [32]byte
	absent, err := oc.History(ctx, &ktpb.MonitorRequest{Index: nobody[:]})
	if err != nil {
		t.Fatal(err)
	}
	if vh, err := ktctl.VerifyMonitor(k, nobody, absent); err != nil || len(vh.Changes) != 0 {
		t.Fatalf("absent index: %v, %+v", err, vh)
	}

	flip := func(b []byte, i int) []byte {
		b = slices.Clone(b)
		b[(i+len(b))%len(b)] ^= 1
		return b
	}
	for _, tc := range []struct {
		name  string
		index [32]byte
		edit  func(r *ktpb.MonitorResponse)
		want  error // the client's typed error (ktctl.ErrVerification too)
	}{
		{"no epoch part", index, func(r *ktpb.MonitorResponse) { r.Epoch = nil }, client.ErrMalformed},
		{"checkpoint signature", index, func(r *ktpb.MonitorResponse) { r.Epoch.Checkpoint = flip(r.Epoch.Checkpoint, 3) }, client.ErrCheckpointSignature},
		{"cosignature stripped", index, func(r *ktpb.MonitorResponse) {
			var keep []string
			for _, l := range splitNote(string(r.Epoch.Checkpoint)) {
				if !strings.HasPrefix(l, "— witness.ktctl.test ") {
					keep = append(keep, l)
				}
			}
			r.Epoch.Checkpoint = []byte(strings.Join(keep, "\n") + "\n")
		}, client.ErrWitnessQuorum},
		{"epoch record malformed", index, func(r *ktpb.MonitorResponse) { r.Epoch.EpochRecord = r.Epoch.EpochRecord[:10] }, client.ErrMalformed},
		{"epoch record not last", index, func(r *ktpb.MonitorResponse) {
			e, _ := api.ParseEpochRecord(r.Epoch.EpochRecord)
			e.LogSize--
			r.Epoch.EpochRecord, _ = e.MarshalBinary()
		}, client.ErrNotLatestEpoch},
		{"epoch record other root", index, func(r *ktpb.MonitorResponse) { r.Epoch.EpochRecord = flip(r.Epoch.EpochRecord, -1) }, client.ErrEpochInclusion},
		{"epoch inclusion proof", index, func(r *ktpb.MonitorResponse) { r.Epoch.InclusionProof[0] = flip(r.Epoch.InclusionProof[0], 0) }, client.ErrEpochInclusion},
		{"malformed change", index, func(r *ktpb.MonitorResponse) { r.Changes[1].ChangeRecord = r.Changes[1].ChangeRecord[:50] }, client.ErrMalformed},
		{"other index asked", [32]byte{1}, func(r *ktpb.MonitorResponse) {}, client.ErrMonitorGap},
		{"version withheld", index, func(r *ktpb.MonitorResponse) { r.Changes = slices.Delete(r.Changes, 2, 3) }, client.ErrMonitorGap},
		{"versions reordered", index, func(r *ktpb.MonitorResponse) { r.Changes[1], r.Changes[2] = r.Changes[2], r.Changes[1] }, client.ErrMonitorGap},
		{"latest withheld", index, func(r *ktpb.MonitorResponse) { r.Changes = r.Changes[:3] }, client.ErrMapProof},
		{"all withheld", index, func(r *ktpb.MonitorResponse) { r.Changes = nil }, client.ErrMapProof},
		{"log index after the epoch", index, func(r *ktpb.MonitorResponse) {
			e, _ := api.ParseEpochRecord(r.Epoch.EpochRecord)
			r.Changes[3].LogIndex = e.LogSize
		}, client.ErrMonitorGap},
		{"log index out of order", index, func(r *ktpb.MonitorResponse) { r.Changes[2].LogIndex = r.Changes[1].LogIndex }, client.ErrMonitorGap},
		{"log index moved", index, func(r *ktpb.MonitorResponse) { r.Changes[1].LogIndex++ }, client.ErrMonitorGap},
		{"change inclusion proof", index, func(r *ktpb.MonitorResponse) {
			r.Changes[2].InclusionProof[1] = flip(r.Changes[2].InclusionProof[1], 5)
		}, client.ErrMonitorGap},
		{"opening", index, func(r *ktpb.MonitorResponse) { r.Changes[0].Opening = flip(r.Changes[0].Opening, 0) }, client.ErrCommitment},
		{"opening length", index, func(r *ktpb.MonitorResponse) { r.Changes[0].Opening = r.Changes[0].Opening[:31] }, client.ErrMalformed},
		{"device set of another version", index, func(r *ktpb.MonitorResponse) {
			r.Changes[3].DeviceSet, r.Changes[3].Opening = r.Changes[2].DeviceSet, r.Changes[2].Opening
		}, client.ErrCommitment},
		{"map proof", index, func(r *ktpb.MonitorResponse) { r.MapProof = flip(r.MapProof, -2) }, client.ErrMapProof},
		{"map proof malformed", index, func(r *ktpb.MonitorResponse) { r.MapProof = r.MapProof[:1] }, client.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := proto.Clone(good).(*ktpb.MonitorResponse)
			tc.edit(r)
			_, err := ktctl.VerifyMonitor(k, tc.index, r)
			var ve *ktctl.VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, ktctl.ErrVerification) || !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want a *VerifyError wrapping %v", err, tc.want)
			}
		})
	}

	t.Run("EpochAt", func(t *testing.T) {
		r := client.LogReader{C: ktpb.NewLogClient(f.Conn)}
		cp, err := ktctl.FetchCheckpoint(ctx, r, k)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range append(f.Alice.Versions, f.Bob.Versions...) {
			e, err := ktctl.EpochAt(ctx, r, cp, v.Epoch)
			if err != nil {
				t.Fatalf("epoch %d: %v", v.Epoch, err)
			}
			if e.Epoch != v.Epoch || e.LogSize <= v.LogIndex {
				t.Errorf("epoch %d = %+v, but version at %d is in it", v.Epoch, e, v.LogIndex)
			}
		}
		if _, err := ktctl.EpochAt(ctx, r, cp, 1000); !errors.Is(err, ktctl.ErrArgument) {
			t.Errorf("epoch 1000: %v, want ErrArgument", err)
		}
	})
}

func splitNote(n string) []string {
	var out []string
	for len(n) > 0 {
		i := 0
		for i < len(n) && n[i] != '\n' {
			i++
		}
		out = append(out, n[:i])
		if i < len(n) {
			i++
		}
		n = n[i:]
	}
	return out
}

// memLog builds a signed in-memory log of entries.
func memLog(t *testing.T, entries [][]byte) (*conformance.MemoryLog, *ktctl.Keys) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "mem.example/kt")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	l := conformance.NewMemoryLog("mem.example/kt", s)
	if _, err := l.Append(context.Background(), entries); err != nil {
		t.Fatal(err)
	}
	return l, &ktctl.Keys{Origin: "mem.example/kt", LogVerifier: v, LogVerifierKey: vkey}
}

func epochEntry(epoch, logSize uint64) []byte {
	b, _ := (&api.EpochRecord{Epoch: epoch, Timestamp: 1e12 + epoch, LogSize: logSize}).MarshalBinary()
	return b
}

// TestEpochAtLargeLog finds every epoch of a log of several thousand
// entries by binary search, and rejects misnumbered epochs.
func TestEpochAtLargeLog(t *testing.T) {
	ctx := context.Background()
	var entries [][]byte
	var at []uint64
	filler := make([]byte, 40)
	filler[0], filler[1] = api.FormatVersion, byte(api.TypeChange) // never parsed: not an epoch record
	for e := uint64(0); e < 60; e++ {
		at = append(at, uint64(len(entries)))
		entries = append(entries, epochEntry(e, uint64(len(entries))))
		for range (e * 37) % 150 {
			entries = append(entries, filler)
		}
	}
	entries = append(entries, epochEntry(60, uint64(len(entries))))
	at = append(at, uint64(len(entries)-1))
	l, k := memLog(t, entries)
	cp, err := ktctl.FetchCheckpoint(ctx, l, k)
	if err != nil {
		t.Fatal(err)
	}
	for e, pos := range at {
		got, err := ktctl.EpochAt(ctx, l, cp, uint64(e))
		if err != nil || got.LogSize != pos {
			t.Fatalf("epoch %d: %+v, %v; want log size %d", e, got, err, pos)
		}
	}

	// A log whose epoch 1 is missing, and one whose epoch record lies
	// about its position.
	for _, tc := range []struct {
		name    string
		entries [][]byte
		epoch   uint64
	}{
		{"gap", [][]byte{epochEntry(0, 0), filler, epochEntry(2, 2)}, 1},
		{"wrong log size", [][]byte{epochEntry(0, 0), filler, epochEntry(1, 7)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, k := memLog(t, tc.entries)
			cp, err := ktctl.FetchCheckpoint(ctx, l, k)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ktctl.EpochAt(ctx, l, cp, tc.epoch)
			wantVerify(t, err, "epoch record")
		})
	}
}

// lyingReader serves another entry than the log holds at one index.
type lyingReader struct {
	*conformance.MemoryLog
	at    uint64
	entry []byte
}

func (r lyingReader) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	es, err := r.MemoryLog.Entries(ctx, start, end)
	if err == nil && start <= r.at && r.at < start+uint64(len(es)) {
		es = slices.Clone(es)
		es[r.at-start] = r.entry
	}
	return es, err
}

// TestScanAndHistory checks that a whole-log scan notices a substituted
// entry, and that History reports broken rules per record.
func TestScanAndHistory(t *testing.T) {
	ctx := context.Background()
	idx := [32]byte{7}
	rec := func(version uint64, prev [32]byte) (*api.ChangeRecord, []byte) {
		r := &api.ChangeRecord{Index: idx, Version: version, Prev: prev, Kind: api.AuthEnroll}
		_, key, _ := ed25519Key()
		r.Authorizers = []api.Authorizer{{Role: api.RoleDevice, Digest: api.KeyDigest([32]byte(key.Public().(ed25519PublicKey)))}}
		r.Sign("mem.example/kt", key)
		b, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return r, b
	}
	_, v1 := rec(1, [32]byte{})
	_, v2bad := rec(2, api.LeafHash(v1)) // an enrollment over a live record: R4
	_, v1again := rec(1, [32]byte{})     // a replay of version 1: R2
	entries := [][]byte{epochEntry(0, 0), v1, epochEntry(1, 2), v2bad, v1again, epochEntry(2, 5)}
	l, k := memLog(t, entries)
	cp, err := ktctl.FetchCheckpoint(ctx, l, k)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ktctl.History(ctx, l, cp, k, idx, nil)
	wantVerify(t, err, "history")
	if len(res.Records) != 3 || res.Records[0].Problem != "" || res.Records[1].Problem == "" || res.Records[2].Problem == "" {
		t.Fatalf("records = %+v", res.Records)
	}
	for i, want := range []uint64{1, 2, 2} {
		if e := res.Records[i].Epoch; e == nil || *e != want {
			t.Errorf("record %d epoch %v, want %d", i, e, want)
		}
	}

	var calls []uint64
	err = ktctl.Scan(ctx, lyingReader{l, 3, v1again}, cp, func(done, total uint64) { calls = append(calls, done) }, func(uint64, []byte) error { return nil })
	wantVerify(t, err, "log root")
	if len(calls) == 0 || calls[len(calls)-1] != cp.Size {
		t.Errorf("progress calls %v", calls)
	}
	if err := ktctl.Scan(ctx, l, cp, nil, func(uint64, []byte) error { return nil }); err != nil {
		t.Errorf("Scan of the genuine log: %v", err)
	}
	stop := fmt.Errorf("stop")
	if err := ktctl.Scan(ctx, l, cp, nil, func(uint64, []byte) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("Scan returned %v, want the callback's error", err)
	}
}

func TestVerifyCheckpointOtherLog(t *testing.T) {
	_, k := memLog(t, [][]byte{epochEntry(0, 0)})
	p, err := witness.ParsePolicy([]byte("quorum none\n"))
	if err != nil {
		t.Fatal(err)
	}
	k.Policy = p
	l, _ := memLog(t, [][]byte{epochEntry(0, 0)})
	raw, _ := l.Checkpoint(context.Background())
	// Another log's checkpoint does not verify with k.
	_, err = ktctl.VerifyCheckpoint(raw, k)
	wantVerify(t, err, "checkpoint")
}

type ed25519PublicKey = ed25519.PublicKey

func ed25519Key() (ed25519.PublicKey, ed25519.PrivateKey, error) { return ed25519.GenerateKey(nil) }

func TestListEntriesLimit(t *testing.T) {
	entries := make([][]byte, ktctl.MaxListEntries+1)
	for i := range entries {
		entries[i] = epochEntry(uint64(i), uint64(i))
	}
	l, k := memLog(t, entries)
	ctx := context.Background()
	cp, err := ktctl.FetchCheckpoint(ctx, l, k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ktctl.ListEntries(ctx, l, cp, 0, cp.Size, false); !errors.Is(err, ktctl.ErrArgument) {
		t.Errorf("listing %d entries: %v, want ErrArgument", cp.Size, err)
	}
	es, err := ktctl.ListEntries(ctx, l, cp, 1, cp.Size, false)
	if err != nil || len(es) != ktctl.MaxListEntries || es[len(es)-1].Epoch.Epoch != cp.Size-1 {
		t.Errorf("listing the limit: %d entries, %v", len(es), err)
	}
}
