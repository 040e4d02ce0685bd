package client_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/log"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestTrustedRoundTrip(t *testing.T) {
	f := newFixture(t)
	res, err := client.VerifyLookup(f.p, nil, alice, f.s.lookup(alice, 0), f.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got client.Trusted
	if err := got.UnmarshalBinary(mustMarshal(t, res.Trusted)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(res.Trusted, &got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	// The restored state is usable: a lookup without an epoch part.
	if _, err := client.VerifyLookup(f.p, &got, bob, f.s.lookup(bob, got.Size), f.now, nil); err != nil {
		t.Fatal(err)
	}
}

func TestMonitorStateRoundTrip(t *testing.T) {
	f := newFixture(t)
	st, _ := f.poll0(t)
	var got client.MonitorState
	if err := got.UnmarshalBinary(mustMarshal(t, st)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(st, &got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	var zero client.MonitorState
	if err := zero.UnmarshalBinary(mustMarshal(t, &client.MonitorState{Index: st.Index})); err != nil {
		t.Fatalf("version 0 state: %v", err)
	}
	// After a VRF rotation (design.md 11.2): encoding version 2, which
	// keeps the count; without one the encoding is version 1 as before.
	rot := *st
	rot.VRFRotations = 2
	b := mustMarshal(t, &rot)
	if b[0] != 2 || mustMarshal(t, st)[0] != 1 {
		t.Fatalf("encoding versions %d and %d, want 2 and 1", b[0], mustMarshal(t, st)[0])
	}
	var got2 client.MonitorState
	if err := got2.UnmarshalBinary(b); err != nil || got2.VRFRotations != 2 {
		t.Fatalf("round trip with VRF rotations: %v, %d", err, got2.VRFRotations)
	}
}

// goldenTrusted and goldenMonitor are deterministic states whose encodings
// are pinned in testdata/.
func goldenTrusted(t *testing.T) *client.Trusted {
	seed := bytes.Repeat([]byte{7}, 32)
	skey := "PRIVATE+KEY+" + testOrigin + "+" + keyHashHex(t, seed) + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, seed...))
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	root := bytes.Repeat([]byte{0xab}, 32)
	cp, err := log.SignCheckpoint(signer, testOrigin, 43, root)
	if err != nil {
		t.Fatal(err)
	}
	return &client.Trusted{
		Checkpoint: cp,
		Size:       43,
		Root:       [32]byte(root),
		Epoch:      api.EpochRecord{Epoch: 7, Timestamp: 1767268800000, LogSize: 42, MapRoot: [32]byte{1, 2, 3}, MapSize: 30},
		QuorumTime: time.Unix(1767268801, 0),
	}
}

// keyHashHex computes the note key hash of an Ed25519 seed named testOrigin.
func keyHashHex(t *testing.T, seed []byte) string {
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(testOrigin, pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(vkey, "+")[1]
}

func goldenMonitor() *client.MonitorState {
	d := api.Device{ID: [16]byte{1}, Suite: api.SuiteX25519, HPKEKey: bytes.Repeat([]byte{9}, 32), SigningKey: [32]byte{5}, Created: 1767225600}
	set := &api.DeviceSet{AccountID: [16]byte{0xac}, Devices: []api.Device{d}}
	return &client.MonitorState{
		Index:       [32]byte{0x1d},
		Version:     3,
		LeafHash:    [32]byte{0x1e},
		Authorizers: set.Authorizers(),
		DeviceSet:   set,
		Known:       [][32]byte{{5}, {6}},
	}
}

// goldenDeviceKeys are deterministic device keys: an Ed25519 key from a
// fixed seed and an X25519 HPKE key from RFC 9180 DeriveKeyPair.
func goldenDeviceKeys(t *testing.T) *client.DeviceKeys {
	kem, err := hpke.NewKEM(api.KEMX25519HKDFSHA256)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := kem.DeriveKeyPair(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return &client.DeviceKeys{
		ID: [16]byte{1, 2, 3}, Signing: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, 32)),
		Suite: api.SuiteX25519, HPKE: sk, Created: 1700000000,
	}
}

// goldenEnvelope is a format-1 envelope with fixed fields (not a real
// ciphertext: the golden file pins the framing).
func goldenEnvelope() *client.Envelope {
	return &client.Envelope{
		Version: client.EnvelopeV1,
		Suite:   api.SuiteHybrid, Device: [16]byte{4, 5, 6},
		From: "mailto:alice@example.com", To: "mailto:bob@example.com", Owner: "mailto:bob@example.com",
		Enc: bytes.Repeat([]byte{0xe}, 32), Ciphertext: []byte("ciphertext and tag"),
	}
}

// goldenEnvelopeV2 is a format-2 envelope with fixed fields, signed by a
// fixed message key for origin "example.com/kt".
func goldenEnvelopeV2() *client.Envelope {
	e := goldenEnvelope()
	e.Version = client.EnvelopeV2
	e.SenderDevice = [16]byte{7, 8, 9}
	e.Timestamp = 1767225600123
	e.MessageID = [16]byte{0xa, 0xb, 0xc}
	e.Sign("example.com/kt", ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0xd}, 32)))
	return e
}

// goldenDeviceKeysV2 are goldenDeviceKeys with a message-signing key.
func goldenDeviceKeysV2(t *testing.T) *client.DeviceKeys {
	k := goldenDeviceKeys(t)
	k.Message = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0xc}, 32))
	return k
}

type binaryString string

func (s binaryString) MarshalBinary() ([]byte, error) { return []byte(s), nil }

func TestStateGolden(t *testing.T) {
	for _, tc := range []struct {
		file string
		v    interface{ MarshalBinary() ([]byte, error) }
	}{
		{"trusted.golden", goldenTrusted(t)},
		{"monitor-state.golden", goldenMonitor()},
		{"device-keys.golden", goldenDeviceKeys(t)},
		{"descriptor.golden", binaryString(goldenDeviceKeys(t).Descriptor())},
		{"envelope.golden", goldenEnvelope()},
		{"envelope-v2.golden", goldenEnvelopeV2()},
		{"device-keys-v2.golden", goldenDeviceKeysV2(t)},
		{"descriptor-v2.golden", binaryString(goldenDeviceKeysV2(t).Descriptor())},
		{"message-statement.golden", binaryString(client.MessageStatement("example.com/kt", goldenEnvelopeV2()))},
		{"seen-messages.golden", &client.SeenMessages{Mark: 5, Entries: []client.SeenMessage{{Key: [32]byte{1}, Time: 6}, {Key: [32]byte{2}, Time: 7}}}},
		{"client-state.golden", &client.State{
			Trusted: goldenTrusted(t), Device: goldenDeviceKeys(t),
			Handles: map[string]*client.MonitorState{"mailto:alice@example.com": goldenMonitor()},
			Primary: "mailto:alice@example.com",
			Pins:    map[string][32]byte{"mailto:bob@example.com": {7}},
		}},
		{"client-state-refused.golden", &client.State{
			Trusted: goldenTrusted(t),
			Refused: map[string]*client.Refusal{"example.com/kt+01020304": testRefusal()},
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got := hex.EncodeToString(mustMarshal(t, tc.v)) + "\n"
			path := filepath.Join("testdata", tc.file)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("encoding changed (run with -update if intended):\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestUnmarshalTrustedRejects(t *testing.T) {
	good := mustMarshal(t, goldenTrusted(t))
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for name, b := range map[string][]byte{
		"empty":            nil,
		"unknown version":  edit(func(b []byte) []byte { b[0] = 2; return b }),
		"truncated":        good[:len(good)-1],
		"trailing byte":    append(bytes.Clone(good), 0),
		"log size not N-1": edit(func(b []byte) []byte { b[1+18+7]++; return b }),
		"epoch type wrong": edit(func(b []byte) []byte { b[2] = 1; return b }),
		"not a note":       edit(func(b []byte) []byte { b[len(b)-3] = '\n'; return b }),
	} {
		t.Run(name, func(t *testing.T) {
			var tr client.Trusted
			if err := tr.UnmarshalBinary(b); !errors.Is(err, client.ErrState) {
				t.Fatalf("error %v, want ErrState", err)
			}
		})
	}
}

func TestUnmarshalMonitorStateRejects(t *testing.T) {
	good := mustMarshal(t, goldenMonitor())
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	noSet := goldenMonitor()
	noSet.DeviceSet = nil
	unsorted := goldenMonitor()
	unsorted.Known = [][32]byte{{6}, {5}}
	for name, b := range map[string][]byte{
		"empty":                                  nil,
		"unknown version":                        edit(func(b []byte) []byte { b[0] = 9; return b }),
		"truncated":                              good[:len(good)-1],
		"trailing byte":                          append(bytes.Clone(good), 0),
		"authorizer role 3":                      edit(func(b []byte) []byte { b[1+32+8+32+1] = 3; return b }),
		"version without a set":                  mustMarshal(t, noSet),
		"known keys unsorted":                    mustMarshal(t, unsorted),
		"version 2 without a VRF rotation count": edit(func(b []byte) []byte { b[0] = 2; return b }),
		"version 2 with zero VRF rotations":      edit(func(b []byte) []byte { b[0] = 2; return append(b, 0, 0, 0, 0) }),
	} {
		t.Run(name, func(t *testing.T) {
			var s client.MonitorState
			if err := s.UnmarshalBinary(b); !errors.Is(err, client.ErrState) {
				t.Fatalf("error %v, want ErrState", err)
			}
		})
	}
}

// TestNoWitnessesMessage: refusing a policy without witnesses names the
// kt flag that accepts it, not only the Go field.
func TestNoWitnessesMessage(t *testing.T) {
	pb := newKeys(t).parameters()
	pb.WitnessPolicy = "quorum none\n"
	_, err := client.NewParams(pb, client.Options{})
	if !errors.Is(err, client.ErrInvalidParams) || !strings.Contains(err.Error(), "--insecure-no-witnesses") {
		t.Fatalf("got %v, want ErrInvalidParams naming --insecure-no-witnesses", err)
	}
}

func TestNewParams(t *testing.T) {
	k := newKeys(t)
	// The log's raw Ed25519 key, from its vkey "name+hash+base64(0x01 ||
	// key)"; the base64 may itself contain '+'.
	vkey := k.parameters().LogPublicKey
	rawLogKey, err := base64.StdEncoding.DecodeString(strings.SplitN(vkey, "+", 3)[2])
	if err != nil || len(rawLogKey) != 33 {
		t.Fatalf("cannot decode the log key %q: %v", vkey, err)
	}
	logKey := rawLogKey[1:]
	other := newKeys(t)
	for _, tc := range []struct {
		name string
		edit func(p *ktpb.Parameters)
		opts client.Options
		ok   bool
	}{
		{"valid", func(*ktpb.Parameters) {}, client.Options{}, true},
		{"quorum none refused", func(p *ktpb.Parameters) { p.WitnessPolicy = "quorum none\n" }, client.Options{}, false},
		{"quorum none when insecure", func(p *ktpb.Parameters) { p.WitnessPolicy = "quorum none\n" }, client.Options{InsecureNoWitnesses: true}, true},
		{"no policy refused", func(p *ktpb.Parameters) { p.WitnessPolicy = "" }, client.Options{}, false},
		{"malformed policy", func(p *ktpb.Parameters) { p.WitnessPolicy = "quorum nobody\n" }, client.Options{}, false},
		{"policy for another log", func(p *ktpb.Parameters) { p.WitnessPolicy = other.policy() }, client.Options{}, false},
		{"bad log key", func(p *ktpb.Parameters) { p.LogPublicKey = "x" }, client.Options{}, false},
		{"log key for another origin", func(p *ktpb.Parameters) { p.Origin = "other.example/kt" }, client.Options{}, false},
		{"bad VRF key", func(p *ktpb.Parameters) { p.VrfPublicKey = "kt-vrf-public:AAAA" }, client.Options{}, false},
		{"short recovery key", func(p *ktpb.Parameters) { p.RecoveryPublicKey = p.RecoveryPublicKey[:31] }, client.Options{}, false},
		{"recovery key is the VRF key", func(p *ktpb.Parameters) { p.RecoveryPublicKey = k.vrf.Public().Bytes() }, client.Options{}, false},
		{"recovery key is the log key", func(p *ktpb.Parameters) {
			p.RecoveryPublicKey = logKey
		}, client.Options{}, false},
		{"negative max age", func(*ktpb.Parameters) {}, client.Options{MaxAge: -time.Second}, false},
		{"nil", nil, client.Options{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pb *ktpb.Parameters
			if tc.edit != nil {
				pb = k.parameters()
				tc.edit(pb)
			}
			p, err := client.NewParams(pb, tc.opts)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				if err := p.Validate(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, client.ErrInvalidParams) {
				t.Fatalf("error %v, want ErrInvalidParams", err)
			}
		})
	}
}

// TestInsecureNoWitnesses: without witnesses a checkpoint needs no
// cosignature, but only when the client opted in; the default refuses.
func TestInsecureNoWitnesses(t *testing.T) {
	f := newFixture(t)
	resp := clone(f.s.lookup(alice, 0))
	resp.Epoch.Checkpoint = editSigs(resp.Epoch.Checkpoint, func(l []string) []string { return l[:1] })
	p := *f.p
	p.Witnesses = nil
	if _, err := client.VerifyLookup(&p, nil, alice, resp, f.now, nil); !errors.Is(err, client.ErrInvalidParams) {
		t.Fatalf("error %v, want ErrInvalidParams", err)
	}
	p.InsecureNoWitnesses = true
	res, err := client.VerifyLookup(&p, nil, alice, resp, f.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Epoch.QuorumTime.IsZero() {
		t.Error("quorum time without witnesses")
	}
	// The pinned policy still applies when there is one.
	p.Witnesses = f.p.Witnesses
	_, err = client.VerifyLookup(&p, nil, alice, resp, f.now, nil)
	checkErr(t, err, client.ErrWitnessQuorum)
}
