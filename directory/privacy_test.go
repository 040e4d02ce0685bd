package directory

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/internal/testing/testkit"
)

// TestLogRevealsNoHandleOrKeyMaterial checks P7 (design.md 18) on what the
// log publishes: every entry, the checkpoint and, on the embedded backend,
// every file of the tlog-tiles directory that anyone can mirror. After a
// history with enrollments, added, removed and re-keyed devices and an
// account key, none of it contains a handle in any form, an HPKE key, a
// device ID, an account ID, an opening, a device set, or the signing key of
// a device that never signed; a key that signed appears (as the signer), and
// an authorizer appears only as its digest.
func TestLogRevealsNoHandleOrKeyMaterial(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := newEnv(t, b)
			var account [16]byte
			rand.Read(account[:])
			alice := newHandle(t, e.k, "Alice.Liddell@Example.COM")
			bob := newHandle(t, e.k, "+1 (415) 555-0100")
			a1, a2, b1, quiet := testkit.NewDevice(), testkit.NewDevice(), testkit.NewDevice(), testkit.NewDevice()
			_, acct, _ := ed25519.GenerateKey(nil)

			secret := map[string][]byte{
				"alice's handle":          []byte(alice.handle),
				"alice's address":         []byte("alice.liddell@example.com"),
				"alice's local part":      []byte("alice.liddell"),
				"bob's handle":            []byte(bob.handle),
				"bob's number":            []byte("14155550100"),
				"bob's national number":   []byte("4155550100"),
				"the account ID":          account[:],
				"the quiet device's key":  quiet.Sign.Public().(ed25519.PublicKey),
				"the quiet device's HPKE": quiet.HPKE,
				"the quiet device's ID":   quiet.ID[:],
			}
			var changes [][]byte // openings and device sets sent to the directory
			for _, d := range []*testkit.Device{a1, a2, b1, quiet} {
				secret["HPKE key of "+hex.EncodeToString(d.ID[:4])] = d.HPKE
				secret["device ID "+hex.EncodeToString(d.ID[:4])] = d.ID[:]
			}

			track := func(opening, set []byte) { changes = append(changes, opening, set) }
			enroll := func(h *handleState, signer ed25519.PrivateKey, set *api.DeviceSet) uint64 {
				hc := h.change(api.AuthEnroll, signer, set, nil)
				track(hc.Opening, hc.DeviceSet)
				res, err := e.d.Enroll(ctxT(t), &ktpb.EnrollRequest{Change: hc, Credential: e.k.token.IssueToken(h.handle)})
				if err != nil {
					t.Fatalf("Enroll %s: %v", h.handle, err)
				}
				h.accepted(hc)
				return res.LogIndices[0]
			}
			apply := func(h *handleState, kind api.AuthKind, signer ed25519.PrivateKey, set *api.DeviceSet, accountKey ed25519.PrivateKey) uint64 {
				hc := h.change(kind, signer, set, accountKey)
				track(hc.Opening, hc.DeviceSet)
				return e.apply(h, hc)
			}

			enroll(alice, a1.Sign, testkit.Set(account, a1))
			apply(alice, api.AuthDevice, a1.Sign, testkit.Set(account, a1, a2, quiet), nil)
			a2b := a2.Rekeyed()
			apply(alice, api.AuthDevice, a1.Sign, testkit.Set(account, a1, a2b, quiet), nil) // re-key a2
			apply(alice, api.AuthDevice, a1.Sign, testkit.Set(account, a1, a2b, quiet), acct)
			enroll(bob, b1.Sign, testkit.Set(account, b1))
			last := apply(bob, api.AuthDevice, b1.Sign, testkit.Set(account, b1), nil)
			secret["HPKE key of the re-keyed device"] = a2b.HPKE
			// a2's first key and the re-keyed key, and the account key,
			// never signed a change: only their digests may appear.
			secret["a2's first signing key"] = a2.Sign.Public().(ed25519.PublicKey)
			secret["a2's new signing key"] = a2b.Sign.Public().(ed25519.PublicKey)
			secret["the account key"] = acct.Public().(ed25519.PublicKey)
			e.lookup(bob.handle, last) // an epoch covers everything

			var published [][]byte
			ckpt, err := e.log.Checkpoint(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			published = append(published, ckpt)
			size, err := e.d.logSize(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			for start := uint64(0); start < size; {
				es, err := e.log.Entries(ctxT(t), start, size)
				if err != nil {
					t.Fatal(err)
				}
				published = append(published, es...)
				start += uint64(len(es))
			}
			if b.name == "posix" {
				err := filepath.WalkDir(e.logDir, func(p string, d fs.DirEntry, err error) error {
					if err != nil || d.IsDir() {
						return err
					}
					raw, err := os.ReadFile(p)
					published = append(published, raw)
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
			}

			// Each secret is searched raw, in hex, in base64 and, for
			// strings, case-insensitively.
			forms := func(v []byte) [][]byte {
				return [][]byte{v, []byte(hex.EncodeToString(v)), []byte(base64.StdEncoding.EncodeToString(v)), []byte(base64.RawURLEncoding.EncodeToString(v))}
			}
			for name, v := range secret {
				for _, f := range forms(v) {
					for i, p := range published {
						if bytes.Contains(p, f) || bytes.Contains(bytes.ToLower(p), bytes.ToLower(f)) && len(f) >= 8 {
							t.Errorf("published item %d contains %s (%q)", i, name, f)
						}
					}
				}
			}
			for i, c := range changes {
				for j, p := range published {
					if len(c) >= 32 && bytes.Contains(p, c) {
						t.Errorf("published item %d contains opening or device set %d", j, i)
					}
				}
			}

			// The control: the published data does carry what design.md 18
			// says it reveals, so the search above can find things. The
			// signing keys that signed appear as signers; the account key
			// appears as an authorizer digest.
			all := bytes.Join(published, nil)
			for name, k := range map[string][]byte{
				"a1's signing key (signed alice's changes)": a1.Sign.Public().(ed25519.PublicKey),
				"b1's signing key (signed bob's changes)":   b1.Sign.Public().(ed25519.PublicKey),
				"alice's VRF index":                         alice.index[:],
			} {
				if !bytes.Contains(all, k) {
					t.Errorf("the log does not contain %s: the search cannot be trusted", name)
				}
			}
			digest := sha256.Sum256(acct.Public().(ed25519.PublicKey))
			if !bytes.Contains(all, digest[:]) {
				t.Error("the account key's digest is not among the authorizers: the search cannot be trusted")
			}
			if strings.Contains(string(all), "example.com") {
				t.Error("the log contains the email domain")
			}
		})
	}
}

// TestMonitorRecordsOnly checks records_only monitoring (design.md 13.3):
// the same epoch part, map proof, records, log indices and inclusion proofs
// as a full answer, but no opening and no device set anywhere in the answer
// (a sender monitoring a contact learns only what the log publishes). The
// control is the full answer, which does carry them.
func TestMonitorRecordsOnly(t *testing.T) {
	e := newEnv(t, backends[0])
	var account [16]byte
	rand.Read(account[:])
	alice := newHandle(t, e.k, "alice@example.com")
	a1, a2 := testkit.NewDevice(), testkit.NewDevice()
	var secrets [][]byte // openings and device sets
	track := func(hc *ktpb.HandleChange) *ktpb.HandleChange {
		secrets = append(secrets, hc.Opening, hc.DeviceSet)
		return hc
	}
	hc := track(alice.change(api.AuthEnroll, a1.Sign, testkit.Set(account, a1), nil))
	if _, err := e.d.Enroll(ctxT(t), &ktpb.EnrollRequest{Change: hc, Credential: e.k.token.IssueToken(alice.handle)}); err != nil {
		t.Fatal(err)
	}
	alice.accepted(hc)
	e.apply(alice, track(alice.change(api.AuthDevice, a1.Sign, testkit.Set(account, a1, a2), nil)))
	last := e.apply(alice, track(alice.change(api.AuthDevice, a2.Sign, testkit.Set(account, a2), nil)))
	ep := e.waitEpoch(last)

	for known := uint64(0); known <= 3; known++ {
		full, err := e.d.Monitor(ctxT(t), signedMonitor(&ktpb.MonitorRequest{Index: alice.index[:], KnownVersion: known}, a2.Sign, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		ro, err := e.d.Monitor(ctxT(t), &ktpb.MonitorRequest{Index: alice.index[:], KnownVersion: known, RecordsOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(full.GetEpoch().GetCheckpoint(), ep.GetCheckpoint()) || !bytes.Equal(ro.GetEpoch().GetCheckpoint(), ep.GetCheckpoint()) {
			t.Fatal("the epoch moved during the test")
		}
		if !bytes.Equal(ro.GetMapProof(), full.GetMapProof()) || len(ro.GetChanges()) != int(3-known) || len(full.GetChanges()) != len(ro.GetChanges()) {
			t.Fatalf("known %d: %d changes records-only, %d full, want %d; same map proof %v", known, len(ro.GetChanges()), len(full.GetChanges()), 3-known, bytes.Equal(ro.GetMapProof(), full.GetMapProof()))
		}
		for i, c := range ro.GetChanges() {
			f := full.GetChanges()[i]
			if !bytes.Equal(c.GetChangeRecord(), f.GetChangeRecord()) || c.GetLogIndex() != f.GetLogIndex() || !slices.EqualFunc(c.GetInclusionProof(), f.GetInclusionProof(), bytes.Equal) {
				t.Errorf("known %d change %d: records-only record, log index or inclusion proof differs from the full answer", known, i)
			}
			if len(c.GetOpening()) != 0 || len(c.GetDeviceSet()) != 0 {
				t.Errorf("known %d change %d: records-only answer has an opening (%d bytes) or a device set (%d bytes)", known, i, len(c.GetOpening()), len(c.GetDeviceSet()))
			}
		}
		roBytes, err := proto.Marshal(ro)
		if err != nil {
			t.Fatal(err)
		}
		fullBytes, _ := proto.Marshal(full)
		for i, s := range secrets {
			if bytes.Contains(roBytes, s) {
				t.Errorf("known %d: the records-only answer contains opening or device set %d", known, i)
			}
			// Control: the full answer carries those of the versions it
			// returns (secrets 2v-2, 2v-1 belong to version v).
			if v := uint64(i/2 + 1); v > known && !bytes.Contains(fullBytes, s) {
				t.Errorf("known %d: the full answer lacks opening or device set %d: the search cannot be trusted", known, i)
			}
		}
	}
}

// TestAPIRevealsNoMoreThanALookup checks P7 (design.md 18) on every
// interface an unauthenticated caller can reach (attack A12): after a
// history of enrollments, added, removed and re-keyed devices and an
// account key, a caller that reads every VRF index from the log and asks
// every public method about every index learns no handle, HPKE key,
// device ID, account ID, opening, device set or never-used key of any
// handle but the one it names (carol). Its full Monitor requests are
// refused; what the refusals and the other answers carry is searched like
// the log in TestLogRevealsNoHandleOrKeyMaterial. The control: the answers
// do carry the named handle's device set and the public records, so the
// search can find things.
func TestAPIRevealsNoMoreThanALookup(t *testing.T) {
	e := newEnv(t, backends[0])
	var account, carolAccount [16]byte
	rand.Read(account[:])
	rand.Read(carolAccount[:])
	alice := newHandle(t, e.k, "Alice.Liddell@Example.COM")
	bob := newHandle(t, e.k, "+1 (415) 555-0100")
	carol := newHandle(t, e.k, "carol@example.org")
	a1, a2, b1, gone, c1 := testkit.NewDevice(), testkit.NewDevice(), testkit.NewDevice(), testkit.NewDevice(), testkit.NewDevice()
	_, acct, _ := ed25519.GenerateKey(nil)

	secret := map[string][]byte{
		"alice's handle":       []byte(alice.handle),
		"alice's local part":   []byte("alice.liddell"),
		"bob's handle":         []byte(bob.handle),
		"bob's number":         []byte("4155550100"),
		"the account ID":       account[:],
		"the account key":      acct.Public().(ed25519.PublicKey),
		"a2's first key":       a2.Sign.Public().(ed25519.PublicKey),
		"the removed device's": gone.Sign.Public().(ed25519.PublicKey),
	}
	for _, d := range []*testkit.Device{a1, a2, b1, gone} {
		secret["HPKE key of "+hex.EncodeToString(d.ID[:4])] = d.HPKE
		secret["device ID "+hex.EncodeToString(d.ID[:4])] = d.ID[:]
	}
	var changes [][]byte // openings and device sets of alice's and bob's changes
	apply := func(h *handleState, kind api.AuthKind, signer ed25519.PrivateKey, set *api.DeviceSet, accountKey ed25519.PrivateKey) uint64 {
		hc := h.change(kind, signer, set, accountKey)
		if h != carol {
			changes = append(changes, hc.Opening, hc.DeviceSet)
		}
		if kind == api.AuthEnroll {
			res, err := e.d.Enroll(ctxT(t), &ktpb.EnrollRequest{Change: hc, Credential: e.k.token.IssueToken(h.handle)})
			if err != nil {
				t.Fatalf("Enroll %s: %v", h.handle, err)
			}
			h.accepted(hc)
			return res.LogIndices[0]
		}
		return e.apply(h, hc)
	}
	apply(alice, api.AuthEnroll, a1.Sign, testkit.Set(account, a1), nil)
	apply(alice, api.AuthDevice, a1.Sign, testkit.Set(account, a1, a2, gone), nil)
	a2b := a2.Rekeyed()
	secret["HPKE key of the re-keyed device"] = a2b.HPKE
	secret["a2's new key"] = a2b.Sign.Public().(ed25519.PublicKey)
	apply(alice, api.AuthDevice, a1.Sign, testkit.Set(account, a1, a2b, gone), nil) // re-key a2
	apply(alice, api.AuthDevice, a1.Sign, testkit.Set(account, a1, a2b), acct)      // remove gone, account key
	apply(bob, api.AuthEnroll, b1.Sign, testkit.Set(account, b1), nil)
	apply(bob, api.AuthDevice, b1.Sign, testkit.Set(account, b1), nil)
	last := apply(carol, api.AuthEnroll, c1.Sign, testkit.Set(carolAccount, c1), nil)
	e.waitEpoch(last)
	ctx := ctxT(t)

	// Every answer and every error the caller gets, marshalled.
	var seen [][]byte
	var what []string
	keep := func(name string, m proto.Message, err error) {
		if m != nil && !reflect.ValueOf(m).IsNil() {
			b, merr := proto.Marshal(m)
			if merr != nil {
				t.Fatal(merr)
			}
			seen, what = append(seen, b), append(what, name)
		}
		if err != nil {
			seen, what = append(seen, []byte(err.Error())), append(what, name+" (error)")
		}
	}

	// The caller reads the log and collects every index and version.
	params, err := e.d.GetParameters(ctx, &ktpb.GetParametersRequest{})
	keep("GetParameters", params, err)
	ep, err := e.d.GetEpoch(ctx, &ktpb.GetEpochRequest{})
	keep("GetEpoch", ep, err)
	cp, err := e.d.GetCheckpoint(ctx, &ktpb.GetCheckpointRequest{})
	keep("GetCheckpoint", cp, err)
	size, err := e.d.logSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	latest := map[[32]byte]uint64{}
	for start := uint64(0); start < size; {
		es, err := e.d.GetEntries(ctx, &ktpb.GetEntriesRequest{Start: start, End: size})
		keep("GetEntries", es, err)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range es.GetEntries() {
			if r, err := api.ParseChangeRecord(raw); err == nil {
				latest[r.Index] = max(latest[r.Index], r.Version)
			}
		}
		start += uint64(len(es.GetEntries()))
	}
	if len(latest) != 3 {
		t.Fatalf("%d indices in the log, want 3", len(latest))
	}
	for i := uint64(0); i+1 < size; i++ {
		p, err := e.d.GetInclusionProof(ctx, &ktpb.GetInclusionProofRequest{Index: i, Size: size})
		keep("GetInclusionProof", p, err)
	}
	cons, err := e.d.GetConsistencyProof(ctx, &ktpb.GetConsistencyProofRequest{OldSize: 1, NewSize: size})
	keep("GetConsistencyProof", cons, err)

	// Every index, every known version, with and without records_only.
	refused := 0
	for index, v := range latest {
		for known := uint64(0); known <= v; known++ {
			for _, ro := range []bool{false, true} {
				name := fmt.Sprintf("Monitor(%x, known %d, records_only %v)", index[:4], known, ro)
				resp, err := e.d.Monitor(ctx, &ktpb.MonitorRequest{Index: index[:], KnownVersion: known, RecordsOnly: ro})
				keep(name, resp, err)
				switch {
				case ro && err != nil:
					t.Errorf("%s: %v", name, err)
				case !ro && err == nil:
					t.Errorf("%s: served without the owner's authorization", name)
				case !ro:
					refused++
				}
			}
		}
	}
	if refused == 0 {
		t.Error("no full Monitor request was refused")
	}
	// The one handle it names, alone and in a batch with guesses.
	lk, err := e.d.Lookup(ctx, &ktpb.LookupRequest{Handle: carol.handle})
	keep("Lookup(carol)", lk, err)
	bl, err := e.d.BatchLookup(ctx, &ktpb.BatchLookupRequest{Handles: []string{carol.handle, "mallory@example.org", "+1 415 555 0199"}})
	keep("BatchLookup(carol, guesses)", bl, err)
	if err != nil || lk.GetDeviceSet() == nil {
		t.Fatalf("the named handle's lookup: %v", err)
	}

	forms := func(v []byte) [][]byte {
		return [][]byte{v, []byte(hex.EncodeToString(v)), []byte(base64.StdEncoding.EncodeToString(v)), []byte(base64.RawURLEncoding.EncodeToString(v))}
	}
	for name, v := range secret {
		for _, f := range forms(v) {
			for i, p := range seen {
				if bytes.Contains(p, f) || bytes.Contains(bytes.ToLower(p), bytes.ToLower(f)) && len(f) >= 8 {
					t.Errorf("the answer of %s contains %s", what[i], name)
				}
			}
		}
	}
	for j, c := range changes {
		for i, p := range seen {
			if len(c) >= 32 && bytes.Contains(p, c) {
				t.Errorf("the answer of %s contains opening or device set %d of alice or bob", what[i], j)
			}
		}
	}

	// The control: the search finds the named handle's device set and
	// keys, and the public records of the others.
	all := bytes.Join(seen, nil)
	for name, k := range map[string][]byte{
		"carol's HPKE key":       c1.HPKE,
		"carol's device ID":      c1.ID[:],
		"carol's account ID":     carolAccount[:],
		"a1's key (a signer)":    a1.Sign.Public().(ed25519.PublicKey),
		"alice's index":          alice.index[:],
		"the account key digest": func() []byte { d := sha256.Sum256(acct.Public().(ed25519.PublicKey)); return d[:] }(),
	} {
		if !bytes.Contains(all, k) {
			t.Errorf("no answer contains %s: the search cannot be trusted", name)
		}
	}
}
