// Package vectors generates and checks the conformance test vectors in
// testdata/vectors (docs/design.md 21): JSON files that another
// implementation of the protocol runs its own code against. Every vector
// is computed by this module's implementation, from a deterministic
// simulator (sim.go), so the files are the same on every run; TestVectors
// regenerates them and compares, and runs every vector's inputs, as read
// back from the JSON, through the implementation again.
//
// Regenerate with
//
//	go run ./internal/testing/vectors/cmd/genvectors
package vectors

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/smt"
	"github.com/keytrans/kt/vrf"
	"google.golang.org/protobuf/proto"
)

// File is one vector file: a description and its vectors.
type File[V any] struct {
	Description string `json:"description"`
	Vectors     []V    `json:"vectors"`
}

// Files are the vector files by name, as Generate writes them.
type Files map[string][]byte

// Names of the files, in the order they are documented.
var Names = []string{
	"handles.json", "encodings.json", "vrf.json", "commitments.json", "map.json",
	"epochs.json", "lookups.json", "monitor.json", "envelopes.json", "evidence.json",
}

func encode(v any) []byte {
	b, err := json.MarshalIndent(v, "", " ")
	check(err)
	return append(b, '\n')
}

// Generate returns every vector file. existing are the committed files (or
// nil): HPKE encryption is randomized, so the envelopes of
// existing["envelopes.json"] are kept while they still open to their
// plaintexts under the (deterministic) device keys.
func Generate(existing Files) (Files, error) {
	var out Files
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("vectors: %v", r)
			}
		}()
		w := newWorld()
		out = Files{
			"handles.json":     encode(genHandles()),
			"encodings.json":   encode(genEncodings()),
			"vrf.json":         encode(w.genVRF()),
			"commitments.json": encode(w.genCommitments()),
			"map.json":         encode(genMap()),
			"epochs.json":      encode(w.genEpochs()),
			"lookups.json":     encode(w.genLookups()),
			"monitor.json":     encode(w.genMonitor()),
			"envelopes.json":   encode(w.genEnvelopes(existing["envelopes.json"])),
			"evidence.json":    encode(w.genEvidence()),
		}
		return nil
	}()
	return out, err
}

// ---- handles.json

// HandleVector: NormalizeHandle(input) is canonical, and VRFInput of it is
// vrf_input_hex (design.md 3.1, 4.1); or the input is refused.
type HandleVector struct {
	Input     string `json:"input"`
	Canonical string `json:"canonical,omitempty"`
	VRFInput  Hex    `json:"vrf_input_hex,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Run computes the vector's expected outputs from its input.
func (v HandleVector) Run() HandleVector {
	out := HandleVector{Input: v.Input}
	c, err := api.NormalizeHandle(v.Input)
	if err != nil {
		out.Error = failure(err).Error
		return out
	}
	out.Canonical, out.VRFInput = c, api.VRFInput(c)
	return out
}

func genHandles() File[HandleVector] {
	inputs := []string{
		"+14155550100", "+1 (415) 555-0100", "+1.415.555.0100", "  +44 20 7946 0958 ", "tel:+1-415-555-0100",
		"TEL:+14155550100", "+12345678", "+123456789012345", "alice@example.com", "Alice@Example.COM",
		"mailto:alice@example.com", "MailTo:Bob.Smith+tag@Mail.Example.org", "o'brien@example.ie",
		"user@bücher.example", "user@BÜCHER.example", "user@xn--bcher-kva.example", "JÖRG@example.de",
		"jo\u0308rg@example.de", "用户@例子.广告",
		// Refused.
		"", "   ", "4155550100", "(415) 555-0100", "+1234567", "+1234567890123456", "+04155550100",
		"tel:14155550100", "+1 415 555 0100;ext=12", "+1415555O100", "+１４１５５５５０１００", "+1/415/555/0100",
		"alice", "sip:alice@example.com", "@example.com", "alice@", "alice@localhost", "alice@@example.com",
		".alice@example.com", "alice.@example.com", "al..ice@example.com", "\"alice\"@example.com",
		"alice smith@example.com", "alice@[192.0.2.1]", "alice@192.0.2.1", "alice@example.com.",
		"alice@exa_mple.com", "alice@-example.com", "alice@example..com", strings.Repeat("a", 65) + "@example.com",
		"alice@" + strings.Repeat("a", 64) + ".com", "alice\x00@example.com",
	}
	f := File[HandleVector]{Description: "Handle normalisation (design.md 3.1) and the VRF input of the canonical handle (4.1). " +
		"Either canonical and vrf_input_hex are set, or error (ErrInvalidHandle) is."}
	for _, in := range inputs {
		f.Vectors = append(f.Vectors, HandleVector{Input: in}.Run())
	}
	return f
}

// ---- encodings.json

// EncodingVector is one encoding of design.md 5: its fields, its bytes,
// and the values derived from it. Exactly one of device_set, change_record
// and epoch_record is set; an invalid encoding has only encoding_hex and
// error (the parser must refuse it).
type EncodingVector struct {
	Name        string        `json:"name"`
	Type        string        `json:"type"` // "device_set", "change_record", "epoch_record", "entry"
	DeviceSet   *DeviceSet    `json:"device_set,omitempty"`
	ChangeRec   *ChangeRecord `json:"change_record,omitempty"`
	EpochRecord *EpochRecord  `json:"epoch_record,omitempty"`
	// Rotation records (5.1, 11.1, 11.2) and move entries (11.2).
	RotationRec *RotationRecord `json:"rotation_record,omitempty"`
	MoveEntry   *MoveEntry      `json:"move_entry,omitempty"`
	Encoding    Hex             `json:"encoding_hex"`
	// For log entries (change and epoch records): LeafHash (5.2).
	LeafHash Hex `json:"leaf_hash_hex,omitempty"`
	// For change records: ChangeStatement(origin, record) (4.3) and
	// whether the signature verifies.
	ChangeStatement Hex   `json:"change_statement_hex,omitempty"`
	SignatureValid  *bool `json:"signature_valid,omitempty"`
	// For device sets with an account key: AccountStatement(origin,
	// account_index, account_version, set) (4.3) and whether the account
	// signature verifies for them.
	AccountIndex     Hex    `json:"account_index_hex,omitempty"`
	AccountVersion   uint64 `json:"account_version,omitempty"`
	AccountStatement Hex    `json:"account_statement_hex,omitempty"`
	AccountValid     *bool  `json:"account_valid,omitempty"`
	// For rotation records: RotationStatement(origin, record) (4.3) and
	// whether both proofs verify over it (api.VerifyRotation: Ed25519 for
	// kinds 1 and 3, ECVRF with vrf.VerifyRotationProof for kind 2).
	RotationStatement Hex    `json:"rotation_statement_hex,omitempty"`
	ProofsValid       *bool  `json:"proofs_valid,omitempty"`
	Error             string `json:"error,omitempty"`
}

// EncodingsFile is encodings.json.
type EncodingsFile struct {
	Description string           `json:"description"`
	Origin      string           `json:"origin"`
	Vectors     []EncodingVector `json:"vectors"`
}

// Run parses the encoding and computes the fields and derived values.
func (v EncodingVector) Run(origin string) EncodingVector {
	out := EncodingVector{Name: v.Name, Type: v.Type, Encoding: v.Encoding, AccountIndex: v.AccountIndex, AccountVersion: v.AccountVersion}
	yes := func(b bool) *bool { return &b }
	switch v.Type {
	case "device_set":
		s, err := api.ParseDeviceSet(v.Encoding)
		if err != nil {
			out.Error = failure(err).Error
			return out
		}
		out.DeviceSet = deviceSetJSON(s)
		if s.Account != nil {
			idx := [32]byte(v.AccountIndex)
			out.AccountStatement = api.AccountStatement(origin, idx, v.AccountVersion, s)
			out.AccountValid = yes(s.VerifyAccount(origin, idx, v.AccountVersion) == nil)
		}
	case "change_record", "epoch_record", "rotation_record", "move_entry", "entry":
		e, err := api.ParseEntry(v.Encoding)
		if err != nil {
			out.Error = failure(err).Error
			return out
		}
		lh := api.LeafHash(v.Encoding)
		out.LeafHash = lh[:]
		switch e := e.(type) {
		case *api.ChangeRecord:
			out.Type = "change_record"
			out.ChangeRec = changeRecordJSON(e)
			out.ChangeStatement = api.ChangeStatement(origin, e)
			out.SignatureValid = yes(e.VerifySignature(origin) == nil)
		case *api.EpochRecord:
			out.Type = "epoch_record"
			out.EpochRecord = epochRecordJSON(e)
		case *api.RotationRecord:
			out.Type = "rotation_record"
			out.RotationRec = rotationRecordJSON(e)
			out.RotationStatement = api.RotationStatement(origin, e)
			out.ProofsValid = yes(api.VerifyRotation(origin, e, vrf.VerifyRotationProof) == nil)
		case *api.MoveEntry:
			out.Type = "move_entry"
			out.MoveEntry = moveEntryJSON(e)
		}
	}
	return out
}

func genEncodings() EncodingsFile {
	f := EncodingsFile{Origin: Origin, Description: "Encodings of design.md 5 (log entries 5.1, leaf hashes 5.2, device sets 5.3) " +
		"and the signed statements of 4.3, rotation records (type 0x03, 11.1, 11.2: rotation_statement_hex, proofs_valid) and move entries (type 0x04, 11.2). Parse encoding_hex: the result has the fields given, and re-encoding them gives encoding_hex " +
		"back (every encoding is canonical). An encoding with error must be refused (ErrMalformed). Roles: 1 device, 2 account. " +
		"Kinds: 1 enroll, 2 device, 3 account, 4 recovery. HPKE ids as in RFC 9180 (KEM 0x0020 X25519, 0x647a MLKEM768-X25519, 0x0010 P-256)."}
	a := newDevice("enc a", api.SuiteX25519)
	b := newDevice("enc b", api.SuiteHybrid)
	acct := ed25519.NewKeyFromSeed(seed("enc account"))
	index := [32]byte(seed("enc index"))
	rec := ed25519.NewKeyFromSeed(seed("enc recovery"))

	set1 := set(a)
	set1.SignAccount(Origin, index, 1, acct)
	set2 := set(a, b)
	set3 := &api.DeviceSet{AccountID: accountID}
	add := func(name string, s *api.DeviceSet, acctVersion uint64) []byte {
		enc := must(s.MarshalBinary())
		v := EncodingVector{Name: name, Type: "device_set", Encoding: enc}
		if s.Account != nil {
			v.AccountIndex, v.AccountVersion = index[:], acctVersion
		}
		f.Vectors = append(f.Vectors, v.Run(Origin))
		return enc
	}
	v1 := add("device set: one X25519 device, account key signed for version 1", set1, 1)
	v2 := add("device set: X25519 and MLKEM768-X25519 devices, no account key", set2, 0)
	v3 := add("device set: tombstone (no devices)", set3, 0)
	add("device set: account signature for another version (does not verify)", set1, 2)
	// Format 0x02 (design.md 5.3): a message-signing key per device.
	withMsg := func(s *api.DeviceSet, labels ...string) *api.DeviceSet {
		s.Format = api.DeviceSetV2
		for i := range s.Devices {
			if i < len(labels) && labels[i] != "" {
				s.Devices[i].MessageKey = [32]byte(ed25519.NewKeyFromSeed(seed(labels[i])).Public().(ed25519.PublicKey))
			}
		}
		return s
	}
	setV2 := withMsg(set(a, b), "enc message 0", "enc message 1")
	setV2.SignAccount(Origin, index, 2, acct)
	v2a := add("device set: format 0x02, X25519 and MLKEM768-X25519 devices with message-signing keys, account key signed for version 2", setV2, 2)
	add("device set: format 0x02, the second device without a message-signing key yet (32 zero bytes)", withMsg(set(a, b), "enc message 0"), 0)
	add("device set: format 0x02, tombstone", withMsg(&api.DeviceSet{AccountID: accountID}), 0)

	mk := func(s []byte, version uint64, prev [32]byte, kind api.AuthKind, st *api.DeviceSet, signer ed25519.PrivateKey) []byte {
		var opening [32]byte
		copy(opening[:], seed(fmt.Sprintf("enc opening %d", version)))
		r := &api.ChangeRecord{Index: index, Version: version, Prev: prev, Kind: kind, Authorizers: st.Authorizers(),
			Commitment: api.Commit(opening, index, version, s)}
		r.Sign(Origin, signer)
		return must(r.MarshalBinary())
	}
	e1 := mk(v1, 1, [32]byte{}, api.AuthEnroll, set1, a.sign())
	e2 := mk(v2, 2, api.LeafHash(e1), api.AuthDevice, set2, a.sign())
	e3 := mk(v3, 3, api.LeafHash(e2), api.AuthRecovery, set3, rec)
	for _, c := range []struct {
		name string
		b    []byte
	}{{"change record: version 1, enroll, signed by the device", e1}, {"change record: version 2, device, two authorizers", e2},
		{"change record: version 3, recovery to a tombstone", e3}} {
		f.Vectors = append(f.Vectors, EncodingVector{Name: c.name, Type: "change_record", Encoding: c.b}.Run(Origin))
	}
	bad := bytes.Clone(e1)
	bad[len(bad)-1] ^= 1
	f.Vectors = append(f.Vectors, EncodingVector{Name: "change record: signature flipped (parses, does not verify)", Type: "change_record", Encoding: bad}.Run(Origin))
	ep := &api.EpochRecord{Epoch: 7, Timestamp: 1767225600123, LogSize: 42, MapRoot: [32]byte(seed("enc map root")), MapSize: 1000}
	f.Vectors = append(f.Vectors, EncodingVector{Name: "epoch record", Type: "epoch_record", Encoding: must(ep.MarshalBinary())}.Run(Origin))

	// Rotation records (5.1; 11.1 kinds 1 and 3, 11.2 kind 2) and move
	// entries (11.2).
	entry := func(name string, b []byte) {
		f.Vectors = append(f.Vectors, EncodingVector{Name: name, Type: "entry", Encoding: b}.Run(Origin))
	}
	vrf0 := must(vrf.NewPrivateKey(seed("enc vrf 0")))
	vrf1 := must(vrf.NewPrivateKey(seed("enc vrf 1")))
	rotV := &api.RotationRecord{Kind: api.KeyVRF, Sequence: 1}
	check(rotV.ProveVRFRotation(Origin, [32]byte(vrf0.Public().Bytes()), [32]byte(vrf1.Public().Bytes()), vrf0.ProveRotation, vrf1.ProveRotation))
	rotVB := must(rotV.MarshalBinary())
	entry("rotation record: VRF key (kind 2), sequence 1, ECVRF proofs over the rotation statement", rotVB)
	rotR := &api.RotationRecord{Kind: api.KeyRecovery, Sequence: 2}
	check(rotR.SignRotation(Origin, rec, ed25519.NewKeyFromSeed(seed("enc recovery 2"))))
	rotRB := must(rotR.MarshalBinary())
	entry("rotation record: recovery key (kind 3), sequence 2, Ed25519 proofs", rotRB)
	edRot := func(b []byte, f func(b []byte)) []byte { b = bytes.Clone(b); f(b); return b }
	entry("rotation record: VRF key, the new key's proof flipped (parses, does not verify)", edRot(rotVB, func(b []byte) { b[len(b)-1] ^= 1 }))
	mv := &api.MoveEntry{Sequence: 1, OldIndex: index, NewIndex: [32]byte(seed("enc new index")), Leaf: api.LeafHash(e2)}
	mvB := must(mv.MarshalBinary())
	entry("move entry: rotation sequence 1", mvB)

	invalid := func(name, typ string, b []byte) {
		v := EncodingVector{Name: name, Type: typ, Encoding: b}.Run(Origin)
		if v.Error == "" {
			panic("invalid encoding accepted: " + name)
		}
		f.Vectors = append(f.Vectors, v)
	}
	invalid("entry: trailing byte", "entry", append(bytes.Clone(e1), 0))
	invalid("entry: truncated", "entry", e1[:len(e1)-1])
	invalid("entry: unknown format version", "entry", append([]byte{0x02}, e1[1:]...))
	invalid("entry: unknown entry type", "entry", append([]byte{e1[0], 0x09}, e1[2:]...))
	invalid("epoch record: trailing byte", "entry", append(must(ep.MarshalBinary()), 0))
	invalid("rotation record: trailing byte", "entry", append(bytes.Clone(rotVB), 0))
	invalid("rotation record: truncated", "entry", rotVB[:len(rotVB)-1])
	invalid("rotation record: kind 2 with 64-byte (Ed25519-sized) proofs", "entry", edRot(rotRB, func(b []byte) { b[2] = byte(api.KeyVRF) }))
	invalid("rotation record: kind 3 with 80-byte (ECVRF-sized) proofs", "entry", edRot(rotVB, func(b []byte) { b[2] = byte(api.KeyRecovery) }))
	invalid("rotation record: unknown key kind 0", "entry", edRot(rotVB, func(b []byte) { b[2] = 0 }))
	invalid("rotation record: unknown key kind 4", "entry", edRot(rotVB, func(b []byte) { b[2] = 4 }))
	invalid("rotation record: sequence 0", "entry", edRot(rotVB, func(b []byte) { clear(b[3:11]) }))
	invalid("rotation record: the new key is the old key", "entry", edRot(rotVB, func(b []byte) { copy(b[43:75], b[11:43]) }))
	invalid("move entry: trailing byte", "entry", append(bytes.Clone(mvB), 0))
	invalid("move entry: truncated", "entry", mvB[:len(mvB)-1])
	invalid("move entry: rotation sequence 0", "entry", edRot(mvB, func(b []byte) { clear(b[2:10]) }))
	invalid("move entry: the new index is the old index", "entry", edRot(mvB, func(b []byte) { copy(b[42:74], b[10:42]) }))
	invalid("device set: trailing byte", "device_set", append(bytes.Clone(v2), 0))
	invalid("device set: truncated", "device_set", v2[:len(v2)-1])
	// Two devices in the wrong order: swap them in the encoding.
	sw := &api.DeviceSet{AccountID: accountID, Devices: []api.Device{set2.Devices[1], set2.Devices[0]}}
	invalid("device set: devices not sorted by ID", "device_set", unsortedSet(sw))
	// Format 0x02: offsets of the first device's keys (5.3).
	first := setV2.Devices[0]
	sigOff := 18 + 16 + 6 + 2 + len(first.HPKEKey)
	msgOff := sigOff + 32
	secondSig := msgOff + 32 + 8 + 16 + 6 + 2 + len(setV2.Devices[1].HPKEKey)
	secondMsg := secondSig + 32
	edit := func(f func(b []byte)) []byte { b := bytes.Clone(v2a); f(b); return b }
	invalid("device set: format 0x02, a message key equal to its device's signing key", "device_set", edit(func(b []byte) { copy(b[msgOff:msgOff+32], b[sigOff:sigOff+32]) }))
	invalid("device set: format 0x02, a message key equal to another device's signing key", "device_set", edit(func(b []byte) { copy(b[msgOff:msgOff+32], b[secondSig:secondSig+32]) }))
	invalid("device set: format 0x02, two devices share a message key", "device_set", edit(func(b []byte) { copy(b[secondMsg:secondMsg+32], b[msgOff:msgOff+32]) }))
	invalid("device set: format 0x02, a message key equal to the account key", "device_set", edit(func(b []byte) { copy(b[msgOff:msgOff+32], b[len(b)-96:len(b)-64]) }))
	invalid("device set: format 0x02, truncated in the last device's message key", "device_set", edit(func(b []byte) {})[:secondMsg+16])
	invalid("device set: format 0x01 bytes labelled format 0x02", "device_set", append([]byte{api.DeviceSetV2}, v2[1:]...))
	invalid("device set: unknown format version 0x03", "device_set", append([]byte{0x03}, v2[1:]...))
	return f
}

// unsortedSet encodes s without the canonical-order check, by encoding
// each device alone and splicing them.
func unsortedSet(s *api.DeviceSet) []byte {
	one := func(d api.Device) []byte {
		return must((&api.DeviceSet{AccountID: s.AccountID, Devices: []api.Device{d}}).MarshalBinary())
	}
	a, b := one(s.Devices[0]), one(s.Devices[1])
	// Layout (5.3): version, account ID (16), u16 count, devices, account
	// key flag: a's header with count 2, a's device, b's device, trailer.
	head := 1 + 16
	devA := a[head+2 : len(a)-1]
	devB := b[head+2 : len(b)-1]
	out := append([]byte(nil), a[:head]...)
	out = append(out, 0, 2)
	out = append(out, devA...)
	out = append(out, devB...)
	return append(out, a[len(a)-1])
}

// ---- world: the simulated directory shared by the later files

type world struct {
	k            *keys
	s            *sim
	p            Params
	a1, a2, b1   *device
	acct         ed25519.PrivateKey
	e1, e2       *epoch
	t1           *client.Trusted // trusted state after epoch 1
	now          time.Time
	carolUnusabl *device
}

const (
	alice   = "+1 (415) 555-0100"
	bob     = "Bob@Example.com"
	carol   = "carol@example.com"
	nobody  = "+4930123456"
	dave    = "dave@example.com"
	eve     = "eve@example.com"
	epochMS = 1000
)

func newWorld() *world {
	w := &world{k: newKeys("world")}
	w.s = newSim(w.k)
	w.p = paramsJSON(w.k.parameters())
	w.a1 = newDevice("a1", api.SuiteX25519)
	w.a2 = newDevice("a2", api.SuiteX25519)
	w.b1 = newDevice("b1", api.SuiteX25519)
	w.acct = ed25519.NewKeyFromSeed(seed("alice account"))
	ha := w.s.handle(alice)
	sa := set(w.a1)
	sa.SignAccount(Origin, ha.index, 1, w.acct)
	w.s.change(alice, sa, api.AuthEnroll, w.a1.sign())
	w.s.change(bob, set(w.b1), api.AuthEnroll, w.b1.sign())
	// carol's only device has an HPKE key that does not deserialize
	// (a P-256 "point" off the curve): step 8.
	c := newDevice("c1", api.HPKESuite{KEM: api.KEMP256HKDFSHA256, KDF: api.KDFHKDFSHA256, AEAD: api.AEADAES128GCM})
	c.dev.HPKEKey = append([]byte{0x04}, make([]byte, 64)...)
	w.carolUnusabl = c
	w.s.change(carol, set(c), api.AuthEnroll, c.sign())
	w.e1 = w.s.closeEpoch(epochOpts{ts: T0.Add(1 * time.Second)})
	res := must(client.VerifyLookup(must(w.p.client()), nil, bob, w.s.lookupAt(w.e1, bob, 0), T0.Add(2*time.Second), nil))
	w.t1 = res.Trusted
	// Epoch 2: alice adds a2; dave enrolls, then is recovered to a
	// tombstone.
	sa2 := set(w.a1, w.a2)
	sa2.SignAccount(Origin, ha.index, 2, w.acct)
	w.s.change(alice, sa2, api.AuthDevice, w.a1.sign())
	d1 := newDevice("d1", api.SuiteX25519)
	w.s.change(dave, set(d1), api.AuthEnroll, d1.sign())
	w.s.change(dave, &api.DeviceSet{AccountID: accountID}, api.AuthRecovery, w.k.recovery)
	// eve's record, under eve's index in the map, claims bob's index:
	// step 5.
	e1 := newDevice("e1", api.SuiteX25519)
	bobIndex := w.s.handle(bob).index
	w.s.logChange(w.s.record(eve, set(e1), api.AuthEnroll, e1.sign(), func(r *api.ChangeRecord) { r.Index = bobIndex }))
	w.e2 = w.s.closeEpoch(epochOpts{ts: T0.Add(3 * time.Second)})
	w.now = T0.Add(5 * time.Second)
	return w
}

// ---- vrf.json

// VRFVector: ECVRF-EDWARDS25519-SHA512-ELL2 (RFC 9381) verification of
// proof_hex for alpha_hex under public_key; index_hex is the first 32
// bytes of the output (design.md 4.1).
type VRFVector struct {
	PublicKey string `json:"public_key"`
	Handle    string `json:"handle,omitempty"`
	Alpha     Hex    `json:"alpha_hex"`
	Proof     Hex    `json:"proof_hex"`
	Valid     bool   `json:"valid"`
	Index     Hex    `json:"index_hex,omitempty"`
}

// Run verifies the proof.
func (v VRFVector) Run() VRFVector {
	out := v
	out.Valid, out.Index = false, nil
	pk, err := vrfParse(v.PublicKey)
	if err != nil {
		return out
	}
	idx, err := pk.Verify(v.Alpha, v.Proof)
	if err == nil {
		out.Valid, out.Index = true, idx[:]
	}
	return out
}

func (w *world) genVRF() File[VRFVector] {
	f := File[VRFVector]{Description: "ECVRF-EDWARDS25519-SHA512-ELL2 (RFC 9381), design.md 4.1: public_key is kt-vrf-public:<base64 of the 32-byte key>; " +
		"alpha is VRFInput(handle); index is beta[0:32]. Invalid proofs must be refused."}
	pub := w.k.vrf.Public().String()
	for _, h := range []string{"mailto:alice@example.com", "tel:+14155550100", "mailto:用户@xn--fsqu00a.xn--4rr70v"} {
		alpha := api.VRFInput(h)
		_, pi := w.k.vrf.Prove(alpha)
		f.Vectors = append(f.Vectors, VRFVector{PublicKey: pub, Handle: h, Alpha: alpha, Proof: pi}.Run())
	}
	alpha := api.VRFInput("mailto:alice@example.com")
	_, pi := w.k.vrf.Prove(alpha)
	other := newKeys("other").vrf.Public().String()
	for _, v := range []VRFVector{
		{PublicKey: pub, Handle: "mailto:alice@example.com (proof's last byte flipped)", Alpha: alpha, Proof: flip(pi, -1)},
		{PublicKey: pub, Handle: "mailto:alice@example.com (proof's first byte flipped)", Alpha: alpha, Proof: flip(pi, 0)},
		{PublicKey: pub, Handle: "mailto:bob@example.com (alice's proof)", Alpha: api.VRFInput("mailto:bob@example.com"), Proof: pi},
		{PublicKey: other, Handle: "mailto:alice@example.com (another key)", Alpha: alpha, Proof: pi},
		{PublicKey: pub, Handle: "mailto:alice@example.com (truncated proof)", Alpha: alpha, Proof: pi[:79]},
	} {
		f.Vectors = append(f.Vectors, v.Run())
	}
	return f
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	if i < 0 {
		i += len(b)
	}
	b[i] ^= 1
	return b
}

// ---- commitments.json

// CommitmentVector: Commit(opening, index, version, value) (design.md
// 4.4), and opening a change record's commitment with R7 (12.2 step 6).
type CommitmentVector struct {
	Name       string `json:"name"`
	Opening    Hex    `json:"opening_hex"`
	Index      Hex    `json:"index_hex"`
	Version    uint64 `json:"version"`
	Value      Hex    `json:"value_hex"`
	Commitment Hex    `json:"commitment_hex,omitempty"`
	// Record, when set, is a change record whose commitment is opened
	// with opening and value: ok, or the error (ErrCommitment, or
	// ErrUnauthorized for R7, with rule).
	Record Hex    `json:"change_record_hex,omitempty"`
	OK     *bool  `json:"open_ok,omitempty"`
	Error  string `json:"error,omitempty"`
	Rule   string `json:"rule,omitempty"`
}

// Run computes the commitment, or opens the record.
func (v CommitmentVector) Run() CommitmentVector {
	out := v
	out.Commitment, out.OK, out.Error, out.Rule = nil, nil, "", ""
	if v.Record == nil {
		c := api.Commit([32]byte(v.Opening), [32]byte(v.Index), v.Version, v.Value)
		out.Commitment = c[:]
		return out
	}
	r, err := api.ParseChangeRecord(v.Record)
	check(err)
	_, err = api.OpenCommitment(r, [32]byte(v.Opening), v.Value)
	ok := err == nil
	out.OK = &ok
	if err != nil {
		out.Error = failure(err).Error
		var ae *api.AuthError
		if errors.As(err, &ae) {
			out.Rule = string(ae.Rule)
		}
	}
	return out
}

func (w *world) genCommitments() File[CommitmentVector] {
	f := File[CommitmentVector]{Description: "Commitments (design.md 4.4): commitment = Commit(opening, index, version, value). " +
		"Vectors with change_record_hex open that record's commitment (api.OpenCommitment, 12.2 step 6): open_ok, or error " +
		"(ErrCommitment; ErrUnauthorized with rule for R7: the record's authorizers are not the set's keys)."}
	h := w.s.handle(alice)
	c := h.versions[0]
	f.Vectors = append(f.Vectors,
		CommitmentVector{Name: "alice version 1", Opening: c.opening[:], Index: h.index[:], Version: 1, Value: c.set}.Run(),
		CommitmentVector{Name: "empty value", Opening: make([]byte, 32), Index: make([]byte, 32), Version: 0, Value: []byte{}}.Run(),
		CommitmentVector{Name: "open alice version 1", Opening: c.opening[:], Index: h.index[:], Version: 1, Value: c.set, Record: c.bytes}.Run(),
		CommitmentVector{Name: "open with a flipped opening", Opening: flip(c.opening[:], 0), Index: h.index[:], Version: 1, Value: c.set, Record: c.bytes}.Run(),
		CommitmentVector{Name: "open with another device set", Opening: c.opening[:], Index: h.index[:], Version: 1, Value: h.versions[1].set, Record: c.bytes}.Run(),
	)
	// R7: a record committing to a set whose keys are not its authorizers.
	s2 := set(w.a1, w.a2)
	_, bad := w.s.record("r7@example.com", s2, api.AuthEnroll, w.a1.sign(), func(r *api.ChangeRecord) { r.Authorizers = set(w.a1).Authorizers() })
	rb := must(bad.record.MarshalBinary())
	f.Vectors = append(f.Vectors, CommitmentVector{Name: "authorizers are not the set's keys (R7)", Opening: bad.opening[:],
		Index: bad.record.Index[:], Version: 1, Value: bad.set, Record: rb}.Run())
	return f
}

// ---- map.json

// MapVector verifies a sparse Merkle map proof (design.md 8.1, 8.2): for
// key, membership with value_hex, or absence when value_hex is empty,
// against root_hex.
type MapVector struct {
	Name  string `json:"name"`
	Root  Hex    `json:"root_hex"`
	Key   Hex    `json:"key_hex"`
	Value Hex    `json:"value_hex"`
	Proof Hex    `json:"proof_hex"`
	Valid bool   `json:"valid"`
}

// Run parses and verifies the proof.
func (v MapVector) Run() MapVector {
	out := v
	out.Valid = false
	p, err := smt.ParseProof(v.Proof)
	if err != nil {
		return out
	}
	var val *[32]byte
	if len(v.Value) > 0 {
		x := [32]byte(v.Value)
		val = &x
	}
	out.Valid = smt.Verify([32]byte(v.Root), [32]byte(v.Key), val, p) == nil
	return out
}

func genMap() File[MapVector] {
	f := File[MapVector]{Description: "Sparse Merkle map proofs (design.md 8): verify proof_hex for key_hex against root_hex, " +
		"as membership of value_hex, or as absence when value_hex is empty."}
	m := must(smt.New(nil))
	var ups []smt.Update
	for i := range 12 {
		ups = append(ups, smt.Update{Key: [32]byte(seed(fmt.Sprintf("map key %d", i))), Value: [32]byte(seed(fmt.Sprintf("map value %d", i)))})
	}
	_, err := m.Apply(ups)
	check(err)
	snap := m.Snapshot()
	root := snap.Root()
	add := func(name string, root [32]byte, key [32]byte, value []byte, proof []byte) {
		f.Vectors = append(f.Vectors, MapVector{Name: name, Root: root[:], Key: key[:], Value: value, Proof: proof}.Run())
	}
	prove := func(k [32]byte) []byte { p, _ := snap.Prove(k); return must(p.MarshalBinary()) }
	for i := range 3 {
		add(fmt.Sprintf("member %d", i), root, ups[i].Key, ups[i].Value[:], prove(ups[i].Key))
	}
	absent := [32]byte(seed("map absent"))
	add("absent key", root, absent, nil, prove(absent))
	empty := must(smt.New(nil)).Snapshot()
	ep, _ := empty.Prove(absent)
	add("absent from the empty map", empty.Root(), absent, nil, must(ep.MarshalBinary()))
	// Invalid.
	p0 := prove(ups[0].Key)
	add("member with another value", root, ups[0].Key, ups[1].Value[:], p0)
	add("member claimed absent", root, ups[0].Key, nil, p0)
	add("absent key claimed present", root, absent, ups[0].Value[:], prove(absent))
	add("proof's last byte flipped", root, ups[0].Key, ups[0].Value[:], flip(p0, -1))
	add("another root", [32]byte(seed("another root")), ups[0].Key, ups[0].Value[:], p0)
	add("truncated proof", root, ups[0].Key, ups[0].Value[:], p0[:len(p0)-1])
	add("trailing byte", root, ups[0].Key, ups[0].Value[:], append(bytes.Clone(p0), 0))
	return f
}

// ---- epochs.json

// EpochVector runs design.md 12.2 step 2 (checkpoint signature, witness
// cosignatures, consistency, epoch record, freshness) on an epoch part,
// as client.VerifyEpoch: either the verified epoch (size, root, epoch
// number, quorum time) or the failing step.
type EpochVector struct {
	Name    string     `json:"name"`
	Params  Params     `json:"params"`
	Trusted *Trusted   `json:"trusted"`
	Part    *EpochPart `json:"epoch_part"`
	NowMS   int64      `json:"now_unix_ms"`
	Expect  EpochOut   `json:"expect"`
}

// EpochOut is the outcome of an EpochVector.
type EpochOut struct {
	OK         bool     `json:"ok"`
	Size       uint64   `json:"size,omitempty"`
	Root       Hex      `json:"root_hex,omitempty"`
	Epoch      uint64   `json:"epoch,omitempty"`
	QuorumTime int64    `json:"quorum_time_unix,omitempty"`
	Failure    *Failure `json:"failure,omitempty"`
}

// Run verifies the epoch part.
func (v EpochVector) Run() EpochVector {
	out := v
	out.Expect = EpochOut{}
	p, err := v.Params.client()
	if err != nil {
		out.Expect.Failure = failure(err)
		return out
	}
	t := must(v.Trusted.client())
	e, err := client.VerifyEpoch(p, t, v.Part.pb(), time.UnixMilli(v.NowMS))
	if err != nil {
		out.Expect.Failure = failure(err)
		return out
	}
	out.Expect = EpochOut{OK: true, Size: e.Size, Root: e.Root[:], Epoch: e.Record.Epoch, QuorumTime: e.QuorumTime.Unix()}
	return out
}

// editSigs rewrites the signature lines of a note.
func editSigs(n []byte, edit func(lines []string) []string) []byte {
	i := bytes.Index(n, []byte("\n\n"))
	lines := strings.SplitAfter(string(n[i+2:]), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return []byte(string(n[:i+2]) + strings.Join(edit(lines), ""))
}

func (w *world) genEpochs() File[EpochVector] {
	f := File[EpochVector]{Description: "Epoch checkpoint verification (design.md 12.2 step 2; checkpoints and cosignatures 9, 9.1): " +
		"params are pinned, trusted is the client's state (null: none), now_unix_ms the client's clock. " +
		"expect.ok with the verified size, root, epoch number and witness quorum time, or expect.failure with the step of 12.2 that fails."}
	now := w.now.UnixMilli()
	part2 := w.s.epochPart(w.e2, 0)
	add := func(name string, p Params, t *Trusted, part *ktpb.EpochPart, now int64) {
		f.Vectors = append(f.Vectors, EpochVector{Name: name, Params: p, Trusted: t, Part: epochPartJSON(part), NowMS: now}.Run())
	}
	t1 := trustedJSON(w.t1)
	add("first contact", w.p, nil, part2, now)
	add("from a trusted epoch, with a consistency proof", w.p, t1, w.s.epochPart(w.e2, w.t1.Size), now)
	tamper := func(edit func(p *ktpb.EpochPart)) *ktpb.EpochPart {
		c := proto.Clone(part2).(*ktpb.EpochPart)
		edit(c)
		return c
	}
	add("checkpoint signature: log signature flipped", w.p, nil, tamper(func(p *ktpb.EpochPart) {
		p.Checkpoint = editSigs(p.Checkpoint, func(l []string) []string { l[0] = corrupt(l[0]); return l })
	}), now)
	add("checkpoint signature: body changed", w.p, nil, tamper(func(p *ktpb.EpochPart) {
		p.Checkpoint = bytes.Replace(p.Checkpoint, []byte(Origin+"\n"), []byte(Origin+"\n9"), 1)
	}), now)
	add("witness quorum: one of the two required cosignatures", w.p, nil, tamper(func(p *ktpb.EpochPart) {
		p.Checkpoint = editSigs(p.Checkpoint, func(l []string) []string { return l[:2] })
	}), now)
	add("witness quorum: a corrupt cosignature among three is not counted, two remain", w.p, nil, tamper(func(p *ktpb.EpochPart) {
		p.Checkpoint = editSigs(p.Checkpoint, func(l []string) []string { l[3] = corrupt(l[3]); return l })
	}), now)
	add("witness quorum: two corrupt cosignatures", w.p, nil, tamper(func(p *ktpb.EpochPart) {
		p.Checkpoint = editSigs(p.Checkpoint, func(l []string) []string { l[2], l[3] = corrupt(l[2]), corrupt(l[3]); return l })
	}), now)
	future := w.s.cosign(w.s.checkpoint(), w.now.Add(time.Minute), nil)
	_ = future
	add("consistency: rollback below the trusted size", w.p, trustedJSON(must(client.VerifyLookup(must(w.p.client()), nil, bob, w.s.lookupAt(w.e2, bob, 0), w.now, nil)).Trusted),
		w.s.epochPart(w.e1, 0), now)
	add("consistency: consistency proof corrupted", w.p, t1, tamper(func(p *ktpb.EpochPart) {
		p.ConsistencyProof = w.s.epochPart(w.e2, w.t1.Size).ConsistencyProof
		p.ConsistencyProof[0] = flip(p.ConsistencyProof[0], 0)
	}), now)
	add("epoch record: inclusion proof corrupted", w.p, nil, tamper(func(p *ktpb.EpochPart) { p.InclusionProof[0] = flip(p.InclusionProof[0], 0) }), now)
	add("epoch record: the previous epoch's record", w.p, nil, tamper(func(p *ktpb.EpochPart) { p.EpochRecord = w.e1.recordBytes }), now)
	add("freshness: epoch older than max age plus skew", w.p, nil, part2, int64(w.e2.record.Timestamp)+70_001)
	add("freshness: epoch older than max age, within the skew", w.p, nil, part2, int64(w.e2.record.Timestamp)+69_999)
	add("witness quorum: cosignatures from the future (the clock is behind by more than the skew)", w.p, nil, part2, int64(w.e2.record.Timestamp)-10_001)
	add("parse: no epoch part and no trusted state", w.p, nil, nil, now)
	bad := w.p
	bad.WitnessPolicy = "quorum nobody\n"
	add("params: witness policy that does not parse", bad, nil, part2, now)
	return f
}

// corrupt flips the last byte of a note signature line's signature.
func corrupt(line string) string {
	name, b64, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(line, "— "), "\n"), " ")
	raw := must(b64Std.DecodeString(b64))
	raw[len(raw)-1] ^= 1
	return "— " + name + " " + b64Std.EncodeToString(raw) + "\n"
}

// ---- lookups.json

// LookupVector runs the full lookup verification of design.md 12.2 (steps
// 1 to 9), as client.VerifyLookup.
type LookupVector struct {
	Name     string         `json:"name"`
	Params   Params         `json:"params"`
	Trusted  *Trusted       `json:"trusted"`
	Handle   string         `json:"handle"`
	Response LookupResponse `json:"response"`
	NowMS    int64          `json:"now_unix_ms"`
	Pinned   Hex            `json:"pinned_account_key_hex,omitempty"`
	Expect   LookupOut      `json:"expect"`
}

// LookupOut is the outcome of a LookupVector.
type LookupOut struct {
	OK         bool   `json:"ok"`
	Registered bool   `json:"registered,omitempty"`
	Version    uint64 `json:"version,omitempty"`
	Kind       uint8  `json:"kind,omitempty"`
	Devices    []Hex  `json:"device_ids_hex,omitempty"`
	Epoch      uint64 `json:"epoch,omitempty"`
	Index      Hex    `json:"index_hex,omitempty"`
	Size       uint64 `json:"trusted_size,omitempty"`
	// After a VRF key rotation (design.md 11.2): the index the record or
	// the absence was proved at when it is not index_hex (a moved record,
	// or the fallback), and not_moved when the fallback was used.
	RecordIndex Hex      `json:"record_index_hex,omitempty"`
	NotMoved    bool     `json:"not_moved,omitempty"`
	Failure     *Failure `json:"failure,omitempty"`
}

// Run verifies the lookup.
func (v LookupVector) Run() LookupVector {
	out := v
	out.Expect = LookupOut{}
	p, err := v.Params.client()
	if err != nil {
		out.Expect.Failure = failure(err)
		return out
	}
	t := must(v.Trusted.client())
	var pinned ed25519.PublicKey
	if v.Pinned != nil {
		pinned = ed25519.PublicKey(v.Pinned)
	}
	res, err := client.VerifyLookup(p, t, v.Handle, v.Response.pb(), time.UnixMilli(v.NowMS), pinned)
	if err != nil {
		out.Expect.Failure = failure(err)
		return out
	}
	o := LookupOut{OK: true, Registered: res.Registered, Version: res.Version, Kind: uint8(res.Kind),
		Epoch: res.Epoch.Record.Epoch, Index: res.Index[:], Size: res.Trusted.Size, NotMoved: res.NotMoved}
	if res.RecordIndex != res.Index {
		o.RecordIndex = res.RecordIndex[:]
	}
	if res.DeviceSet != nil {
		for _, d := range res.DeviceSet.Devices {
			o.Devices = append(o.Devices, d.ID[:])
		}
	}
	out.Expect = o
	return out
}

func (w *world) genLookups() File[LookupVector] {
	f := File[LookupVector]{Description: "Full lookup verification (design.md 12.2, steps 1 to 9): handle is the input as the user typed it; " +
		"response is the directory's answer (12.1; epoch null when omitted). expect.ok with what was verified, or expect.failure " +
		"with the step that fails (client step names: parse, handle, checkpoint signature, witness quorum, consistency, epoch record, " +
		"freshness, vrf, map proof, record, commitment, strict mode, hpke keys, params, and in audit mode audit quorum and audit lag). " +
		"Each tampered vector changes one part of an honest answer. Vectors whose params have an audit_policy (14.1) run in audit mode: " +
		"the checkpoint carries audit statements (tlog-cosignature/v1 lines by auditor keys) that must satisfy the audit policy, each dated " +
		"at most now + skew and at least the epoch timestamp truncated to the second − skew (12.2 step 2.2a), and the epoch must be at most " +
		"max_audit_lag_ms (default 30000) + skew old, checked before the other freshness checks (step 2.5a). " +
		"Vectors named rotation (or \"step: rotation, ...\") follow a VRF key rotation (11.2): params.prev_vrf_public_keys holds the earlier keys, " +
		"the response a moved record's record_vrf_proof_hex or the fallback's prev_vrf_proof_hex, with prev_map_proof_hex; expect.record_index_hex " +
		"is the index the record or absence was proved at, not_moved marks the fallback."}
	now := w.now.UnixMilli()
	t1 := trustedJSON(w.t1)
	add := func(name string, t *Trusted, handle string, r *ktpb.LookupResponse, pinned []byte) {
		f.Vectors = append(f.Vectors, LookupVector{Name: name, Params: w.p, Trusted: t, Handle: handle, Response: lookupJSON(r), NowMS: now, Pinned: pinned}.Run())
	}
	honest := func(name string) *ktpb.LookupResponse { return w.s.lookupAt(w.e2, name, 0) }
	tamper := func(name string, edit func(r *ktpb.LookupResponse)) *ktpb.LookupResponse {
		r := proto.Clone(honest(name)).(*ktpb.LookupResponse)
		edit(r)
		return r
	}
	acctPub := []byte(w.acct.Public().(ed25519.PublicKey))
	add("registered, first contact", nil, alice, honest(alice), nil)
	add("registered, strict mode with the pinned account key", nil, alice, honest(alice), acctPub)
	add("registered, from a trusted epoch (consistency proof)", t1, bob, w.s.lookupAt(w.e2, bob, w.t1.Size), nil)
	add("registered, epoch part omitted (the trusted epoch is the latest)", t1, bob, w.s.lookupAt(w.e1, bob, w.t1.Size), nil)
	add("not registered (absence proof)", nil, nobody, honest(nobody), nil)
	add("tombstone after recovery", nil, dave, honest(dave), nil)

	add("parse: map proof truncated", nil, alice, tamper(alice, func(r *ktpb.LookupResponse) { r.MapProof = r.MapProof[:len(r.MapProof)-1] }), nil)
	add("parse: opening of 31 bytes", nil, alice, tamper(alice, func(r *ktpb.LookupResponse) { r.Opening = r.Opening[:31] }), nil)
	add("handle: the input is not a handle", nil, "alice", honest(alice), nil)
	add("handle: the answer is for another handle", nil, alice, tamper(bob, func(r *ktpb.LookupResponse) {}), nil)
	add("checkpoint signature: log signature flipped", nil, alice, tamper(alice, func(r *ktpb.LookupResponse) {
		r.Epoch.Checkpoint = editSigs(r.Epoch.Checkpoint, func(l []string) []string { l[0] = corrupt(l[0]); return l })
	}), nil)
	add("witness quorum: one cosignature", nil, alice, tamper(alice, func(r *ktpb.LookupResponse) {
		r.Epoch.Checkpoint = editSigs(r.Epoch.Checkpoint, func(l []string) []string { return l[:2] })
	}), nil)
	add("consistency: consistency proof corrupted", t1, bob, tamper(bob, func(r *ktpb.LookupResponse) {
		r.Epoch = w.s.epochPart(w.e2, w.t1.Size)
		r.Epoch.ConsistencyProof[0] = flip(r.Epoch.ConsistencyProof[0], 0)
	}), nil)
	add("epoch record: inclusion proof corrupted", nil, alice, tamper(alice, func(r *ktpb.LookupResponse) {
		r.Epoch.InclusionProof[0] = flip(r.Epoch.InclusionProof[0], 0)
	}), nil)
	{
		stale := LookupVector{Name: "freshness: the clock is past max age plus skew", Params: w.p, Handle: alice, Response: lookupJSON(honest(alice)),
			NowMS: int64(w.e2.record.Timestamp) + 70_001}
		f.Vectors = append(f.Vectors, stale.Run())
	}
	add("vrf: proof flipped", nil, alice, tamper(alice, func(r *ktpb.LookupResponse) { r.VrfProof = flip(r.VrfProof, -1) }), nil)
	add("map proof: proof flipped", nil, alice, tamper(alice, func(r *ktpb.LookupResponse) { r.MapProof = flip(r.MapProof, -1) }), nil)
	add("map proof: a registered handle answered as absent", nil, alice, tamper(alice, func(r *ktpb.LookupResponse) {
		r.ChangeRecord, r.Opening, r.DeviceSet = nil, nil, nil
	}), nil)
	add("map proof: bob's record, opening and set in alice's answer", nil, alice, tamper(alice, func(r *ktpb.LookupResponse) {
		b := honest(bob)
		r.ChangeRecord, r.Opening, r.DeviceSet = b.ChangeRecord, b.Opening, b.DeviceSet
	}), nil)
	add("record: the map holds, under eve's index, a record for bob's index", nil, eve, honest(eve), nil)
	add("commitment: opening flipped", nil, alice, tamper(alice, func(r *ktpb.LookupResponse) { r.Opening = flip(r.Opening, 0) }), nil)
	add("commitment: another device set", nil, alice, tamper(alice, func(r *ktpb.LookupResponse) {
		r.DeviceSet = w.s.handle(alice).versions[0].set
	}), nil)
	add("strict mode: another pinned account key", nil, alice, honest(alice), []byte(ed25519.NewKeyFromSeed(seed("not alice's")).Public().(ed25519.PublicKey)))
	add("strict mode: pinned key, set without an account key", nil, bob, honest(bob), acctPub)
	add("hpke keys: a device key that does not deserialize", nil, carol, honest(carol), nil)

	// Audit mode (design.md 12.2 steps 2.2a and 2.5a, 14.1): params with
	// the 2-of-2 audit policy of a1 and a2; the statements are appended
	// to the epoch checkpoint like cosignatures.
	ap := w.p
	ap.AuditPolicy = w.k.auditPolicy()
	ts := time.UnixMilli(int64(w.e2.record.Timestamp))
	stmt := ts.Add(time.Second)
	audited := func(who []int, at ...time.Time) *ktpb.LookupResponse {
		return tamper(alice, func(r *ktpb.LookupResponse) { r.Epoch.Checkpoint = w.k.auditStatements(r.Epoch.Checkpoint, who, at) })
	}
	addAudit := func(name string, p Params, r *ktpb.LookupResponse, now int64) {
		f.Vectors = append(f.Vectors, LookupVector{Name: name, Params: p, Handle: alice, Response: lookupJSON(r), NowMS: now}.Run())
	}
	both := audited([]int{0, 1}, stmt, stmt)
	addAudit("audit: statements by both auditors of a 2-of-2 audit policy", ap, both, now)
	addAudit("audit: the epoch is older than the audit lag bound, within the skew", ap, both, ts.UnixMilli()+40_000)
	addAudit("audit: statements in the checkpoint of a client not in audit mode (ignored)", w.p, both, now)
	addAudit("audit quorum: one statement missing", ap, audited([]int{0}, stmt), now)
	addAudit("audit quorum: no statements", ap, honest(alice), now)
	addAudit("audit quorum: the second statement is by a key not in the audit policy", ap, audited([]int{0, 2}, stmt, stmt), now)
	addAudit("audit quorum: a statement dated after now plus skew", ap, audited([]int{0, 1}, stmt, w.now.Add(11*time.Second)), now)
	addAudit("audit quorum: a statement dated before the epoch timestamp minus skew", ap, audited([]int{0, 1}, stmt, ts.Add(-11*time.Second)), now)
	addAudit("audit quorum: a statement that does not verify", ap, tamper(alice, func(r *ktpb.LookupResponse) {
		r.Epoch.Checkpoint = editSigs(w.k.auditStatements(r.Epoch.Checkpoint, []int{0, 1}, []time.Time{stmt, stmt}),
			func(l []string) []string { l[len(l)-1] = corrupt(l[len(l)-1]); return l })
	}), now)
	addAudit("audit lag: the epoch is older than the audit lag bound plus skew, within max age", ap, both, ts.UnixMilli()+40_001)
	f.Vectors = append(f.Vectors, genRotationLookups()...)
	return f
}

// genRotationLookups are lookups across a VRF key rotation (design.md
// 11.2), in a world of their own: alice and bob enroll under VRF key K0;
// a kind-2 rotation record to K1 and a move entry for alice (not bob) are
// logged; the next epoch's map has alice's latest leaf at her new index
// too. The client holds the chain: vrf_public_key K1,
// prev_vrf_public_keys [K0]. Each tampered vector changes one part of an
// honest answer and names the step expected to fail.
func genRotationLookups() []LookupVector {
	k := newKeys("rotation")
	s := newSim(k)
	k0 := k.vrf
	k1 := must(vrf.NewPrivateKey(seed("rotation vrf 1")))
	a1, b1 := newDevice("rot a1", api.SuiteX25519), newDevice("rot b1", api.SuiteX25519)
	s.change(alice, set(a1), api.AuthEnroll, a1.sign())
	s.change(bob, set(b1), api.AuthEnroll, b1.sign())
	s.closeEpoch(epochOpts{ts: T0.Add(1 * time.Second)})
	rot := &api.RotationRecord{Kind: api.KeyVRF, Sequence: 1}
	check(rot.ProveVRFRotation(Origin, [32]byte(k0.Public().Bytes()), [32]byte(k1.Public().Bytes()), k0.ProveRotation, k1.ProveRotation))
	s.append(must(rot.MarshalBinary()))
	// Move alice: her latest record gets a leaf at her index under K1.
	ha := s.handle(alice)
	newIdx, _ := k1.Prove(api.VRFInput(ha.name))
	last := ha.versions[len(ha.versions)-1]
	s.append(must((&api.MoveEntry{Sequence: 1, OldIndex: ha.index, NewIndex: newIdx, Leaf: last.leaf}).MarshalBinary()))
	s.pending = append(s.pending, smt.Update{Key: newIdx, Value: last.leaf})
	s.latest[newIdx] = last
	e := s.closeEpoch(epochOpts{ts: T0.Add(3 * time.Second)})
	now := T0.Add(5 * time.Second).UnixMilli()

	p := paramsJSON(k.parameters())
	p.VRFPublicKey, p.PrevVRFPublicKeys = k1.Public().String(), []string{k0.Public().String()}
	prove := func(idx [32]byte) []byte { pr, _ := e.snap.Prove(idx); return must(pr.MarshalBinary()) }
	// lookup answers as ktd does after the rotation (directory/reindex.go).
	lookup := func(name string) *ktpb.LookupResponse {
		canon := must(api.NormalizeHandle(name))
		idx, pi := k1.Prove(api.VRFInput(canon))
		old, piOld := k0.Prove(api.VRFInput(canon))
		r := &ktpb.LookupResponse{Handle: canon, VrfProof: pi, MapProof: prove(idx), Epoch: s.epochPart(e, 0)}
		c := e.latest[idx]
		if c == nil {
			r.PrevVrfProof, r.PrevMapProof = piOld, prove(old)
			c = e.latest[old]
		} else if c.record.Index != idx {
			r.RecordVrfProof, r.PrevMapProof = piOld, prove(c.record.Index)
		}
		if c != nil {
			r.ChangeRecord, r.Opening, r.DeviceSet = c.bytes, c.opening[:], c.set
		}
		return r
	}
	tamper := func(name string, edit func(r *ktpb.LookupResponse)) *ktpb.LookupResponse {
		r := lookup(name)
		edit(r)
		return r
	}
	var out []LookupVector
	add := func(name string, p Params, handle string, r *ktpb.LookupResponse) {
		v := LookupVector{Name: name, Params: p, Handle: handle, Response: lookupJSON(r), NowMS: now}.Run()
		if step, _, _ := strings.Cut(name, ":"); v.Expect.Failure != nil && v.Expect.Failure.Step != step || v.Expect.Failure == nil && !strings.HasPrefix(name, "rotation") {
			panic(fmt.Sprintf("rotation vector %q: unexpected outcome %+v", name, v.Expect))
		}
		out = append(out, v)
	}
	add("rotation: a moved handle (record at its old index, record VRF proof under the previous key)", p, alice, lookup(alice))
	add("rotation: a handle not moved yet (absent at the new index; fallback under the previous key)", p, bob, lookup(bob))
	add("rotation: not registered (absent at the new index and, by the fallback, at the old one)", p, nobody, lookup(nobody))

	add("vrf: rotation, the moved record's VRF proof is under the current key, not an earlier one", p, alice, tamper(alice, func(r *ktpb.LookupResponse) { r.RecordVrfProof = r.VrfProof }))
	add("vrf: rotation, the fallback's VRF proof is under the current key, not the previous one", p, bob, tamper(bob, func(r *ktpb.LookupResponse) { r.PrevVrfProof = r.VrfProof }))
	add("record: rotation, a moved record without its VRF proof", p, alice, tamper(alice, func(r *ktpb.LookupResponse) { r.RecordVrfProof, r.PrevMapProof = nil, nil }))
	add("map proof: rotation, the fallback is missing (absence at the new index alone)", p, bob, tamper(bob, func(r *ktpb.LookupResponse) {
		r.PrevVrfProof, r.PrevMapProof, r.ChangeRecord, r.Opening, r.DeviceSet = nil, nil, nil, nil, nil
	}))
	add("map proof: rotation, the fallback's map proof is at another index (alice's old index)", p, bob, tamper(bob, func(r *ktpb.LookupResponse) { r.PrevMapProof = lookup(alice).PrevMapProof }))
	// The vectors stay under their size budget: verifier-ts/test/rotation.test.mjs
	// derives more tampered answers (parse step 1 of 11.2, proofs swapped
	// between handles) from these.
	return out
}

// ---- monitor.json

// MonitorVector runs the monitoring chain checks of design.md 13 for an
// observer from version 0 (client.VerifyObserved): the epoch part is
// verified like a lookup's (its freshness is not checked), then every
// version 1..n with its inclusion proof, its commitment, the chain of prev
// hashes and authorizations, and the map proof of the latest.
type MonitorVector struct {
	Name     string          `json:"name"`
	Params   Params          `json:"params"`
	Index    Hex             `json:"index_hex"`
	Response MonitorResponse `json:"response"`
	NowMS    int64           `json:"now_unix_ms"`
	Expect   MonitorOut      `json:"expect"`
}

// MonitorOut is the outcome of a MonitorVector: the versions verified,
// the number of rule-violation alerts, or the failure.
type MonitorOut struct {
	OK       bool     `json:"ok"`
	Versions []uint64 `json:"versions,omitempty"`
	Alerts   int      `json:"alerts,omitempty"`
	Failure  *Failure `json:"failure,omitempty"`
}

// Run verifies the monitoring answer.
func (v MonitorVector) Run() MonitorVector {
	out := v
	out.Expect = MonitorOut{}
	p := must(v.Params.client())
	obs, err := client.VerifyObserved(p, [32]byte(v.Index), v.Response.pb(), time.UnixMilli(v.NowMS))
	if err != nil {
		out.Expect.Failure = failure(err)
		return out
	}
	o := MonitorOut{OK: true}
	for _, c := range obs.Changes {
		o.Versions = append(o.Versions, c.Version)
		o.Alerts += len(c.Alerts)
	}
	out.Expect = o
	return out
}

func (w *world) genMonitor() File[MonitorVector] {
	f := File[MonitorVector]{Description: "Monitoring chains (design.md 13), as an observer verifies them from version 0 " +
		"(client.VerifyObserved): expect.ok with the versions verified and the number of rule-violation alerts, or expect.failure."}
	now := w.now.UnixMilli()
	add := func(name, handle string, r *ktpb.MonitorResponse) {
		h := w.s.handle(handle)
		f.Vectors = append(f.Vectors, MonitorVector{Name: name, Params: w.p, Index: h.index[:], Response: monitorJSON(r), NowMS: now}.Run())
	}
	honest := func(name string) *ktpb.MonitorResponse { return w.s.monitor(name, 0) }
	tamper := func(name string, edit func(r *ktpb.MonitorResponse)) *ktpb.MonitorResponse {
		r := proto.Clone(honest(name)).(*ktpb.MonitorResponse)
		edit(r)
		return r
	}
	add("alice: versions 1 and 2", alice, honest(alice))
	add("dave: enrolled, then recovered to a tombstone", dave, honest(dave))
	add("never registered", nobody, honest(nobody))
	add("monitor chain: version 1 left out", alice, tamper(alice, func(r *ktpb.MonitorResponse) { r.Changes = r.Changes[1:] }))
	add("map proof: latest version left out (the map holds version 2)", alice, tamper(alice, func(r *ktpb.MonitorResponse) { r.Changes = r.Changes[:1] }))
	add("monitor chain: versions swapped", alice, tamper(alice, func(r *ktpb.MonitorResponse) { r.Changes[0], r.Changes[1] = r.Changes[1], r.Changes[0] }))
	add("monitor chain: inclusion proof corrupted", alice, tamper(alice, func(r *ktpb.MonitorResponse) {
		r.Changes[1].InclusionProof[0] = flip(r.Changes[1].InclusionProof[0], 0)
	}))
	add("monitor chain: wrong log index", alice, tamper(alice, func(r *ktpb.MonitorResponse) { r.Changes[1].LogIndex++ }))
	add("commitment: opening flipped", alice, tamper(alice, func(r *ktpb.MonitorResponse) { r.Changes[0].Opening = flip(r.Changes[0].Opening, 0) }))
	add("map proof: proof flipped", alice, tamper(alice, func(r *ktpb.MonitorResponse) { r.MapProof = flip(r.MapProof, -1) }))
	add("record: bob's chain for alice's index", alice, honest(bob))
	add("checkpoint signature: log signature flipped", alice, tamper(alice, func(r *ktpb.MonitorResponse) {
		r.Epoch.Checkpoint = editSigs(r.Epoch.Checkpoint, func(l []string) []string { l[0] = corrupt(l[0]); return l })
	}))
	return f
}

// ---- envelopes.json

// EnvelopeVector opens an envelope (design.md 12.3) with a device's keys:
// the plaintext, or the envelope is refused (ErrEnvelope).
type EnvelopeVector struct {
	Name string `json:"name"`
	// The device: its ID, suite and HPKE private key
	// (SerializePrivateKey: the X25519 scalar, or the 32-byte seed of
	// MLKEM768-X25519), which DeriveKeyPair(ikm_hex) also yields.
	DeviceID  Hex    `json:"device_id_hex"`
	KEM       uint16 `json:"kem"`
	KDF       uint16 `json:"kdf"`
	AEAD      uint16 `json:"aead"`
	IKM       Hex    `json:"ikm_hex"`
	Private   Hex    `json:"private_key_hex"`
	Public    Hex    `json:"public_key_hex"`
	Envelope  Hex    `json:"envelope_hex"`
	From      string `json:"from,omitempty"`
	To        string `json:"to,omitempty"`
	Owner     string `json:"owner,omitempty"`
	Plaintext Hex    `json:"plaintext_hex,omitempty"`
	Error     string `json:"error,omitempty"`
	// Format 2 (12.3): the sender device's message-signing key (input),
	// and, for an envelope that parses, its sender fields, the message
	// statement for origin (4.3) and whether the signature verifies
	// under that key.
	SenderMessageKey Hex    `json:"sender_message_key_hex,omitempty"`
	SenderDevice     Hex    `json:"sender_device_hex,omitempty"`
	Timestamp        uint64 `json:"timestamp_ms,omitempty"`
	MessageID        Hex    `json:"message_id_hex,omitempty"`
	MessageStatement Hex    `json:"message_statement_hex,omitempty"`
	SignatureValid   *bool  `json:"signature_valid,omitempty"`
}

func (v EnvelopeVector) keys() *client.DeviceKeys {
	suite := api.HPKESuite{KEM: v.KEM, KDF: v.KDF, AEAD: v.AEAD}
	kem := must(hpke.NewKEM(v.KEM))
	return &client.DeviceKeys{ID: [16]byte(v.DeviceID), Suite: suite, HPKE: must(kem.NewPrivateKey(v.Private))}
}

// Run parses and opens the envelope.
func (v EnvelopeVector) Run() EnvelopeVector {
	out := v
	out.From, out.To, out.Owner, out.Plaintext, out.Error = "", "", "", nil, ""
	out.SenderDevice, out.Timestamp, out.MessageID, out.MessageStatement, out.SignatureValid = nil, 0, nil, nil, nil
	e, err := client.ParseEnvelope(v.Envelope)
	if err != nil {
		out.Error = failure(err).Error
		return out
	}
	if e.Version == client.EnvelopeV2 {
		out.SenderDevice, out.Timestamp, out.MessageID = bytes.Clone(e.SenderDevice[:]), e.Timestamp, bytes.Clone(e.MessageID[:])
		out.MessageStatement = client.MessageStatement(Origin, e)
		ok := len(v.SenderMessageKey) == 32 && e.VerifySignature(Origin, [32]byte(v.SenderMessageKey)) == nil
		out.SignatureValid = &ok
	}
	pt, err := e.Open(v.keys())
	if err != nil {
		out.Error = failure(err).Error
		return out
	}
	out.From, out.To, out.Owner, out.Plaintext = e.From, e.To, e.Owner, pt
	return out
}

// sealEnvelope encrypts plaintext in e to the device keys k, with the
// envelope's own encoding as the HPKE info (12.3).
func sealEnvelope(e *client.Envelope, pub hpke.PublicKey, plaintext []byte) {
	kdf := must(hpke.NewKDF(e.Suite.KDF))
	aead := must(hpke.NewAEAD(e.Suite.AEAD))
	// info = label || 0x00 || the encoding from version to owner: the
	// encoding with empty enc and ciphertext, less their length fields.
	e.Enc, e.Ciphertext = nil, nil
	head := must(e.MarshalBinary())
	if e.Version == client.EnvelopeV2 {
		head = head[:len(head)-64] // the signature
	}
	info := append([]byte("kt/v1/envelope\x00"), head[:len(head)-6]...)
	enc, s, err := hpke.NewSender(pub, kdf, aead, info)
	check(err)
	e.Enc, e.Ciphertext = enc, must(s.Seal(nil, plaintext))
}

func (w *world) genEnvelopes(existing []byte) File[EnvelopeVector] {
	f := File[EnvelopeVector]{Description: "Message envelopes (design.md 12.3), opened by the recipient device: parse envelope_hex, " +
		"check it is for this device and suite, and HPKE-open it (mode base, info = \"kt/v1/envelope\" || 0x00 || the envelope bytes " +
		"from version to owner, empty aad): plaintext_hex with the envelope's from, to and owner, or error (ErrEnvelope). " +
		"HPKE encryption is randomized: these envelopes were sealed once and are checked by opening them. " +
		"Format 2 (version 0x02) adds the sender device, time and message ID to the header (and the info) and a final " +
		"Ed25519 signature by sender_message_key_hex over the message statement for origin " + Origin + " " +
		"(\"kt/v1/message\" || 0x00 || u16 len(origin) || origin || the envelope without the signature): " +
		"message_statement_hex and signature_valid. A recipient accepts a format-2 envelope only if the signature verifies and it opens; " +
		"checking that the key is the sender device's in the sender's verified device set, the time window and replays are the client's."}
	var old File[EnvelopeVector]
	if existing != nil {
		_ = json.Unmarshal(existing, &old)
	}
	reuse := map[string]EnvelopeVector{}
	for _, v := range old.Vectors {
		reuse[v.Name] = v
	}
	type dev struct {
		label string
		suite api.HPKESuite
	}
	for _, d := range []dev{{"envelope x25519", api.SuiteX25519}, {"envelope hybrid", api.SuiteHybrid}} {
		ikm := seed(d.label + " hpke")
		dk := newDevice(d.label, d.suite)
		priv := must(dk.keys.HPKE.Bytes())
		base := EnvelopeVector{DeviceID: dk.keys.ID[:], KEM: d.suite.KEM, KDF: d.suite.KDF, AEAD: d.suite.AEAD, IKM: ikm,
			Private: priv, Public: dk.dev.HPKEKey}
		pt := []byte("hello bob, from alice (" + d.label + ")")
		e := &client.Envelope{Version: client.EnvelopeV1, Suite: d.suite, Device: dk.keys.ID, From: "mailto:alice@example.com", To: "mailto:bob@example.com", Owner: "mailto:bob@example.com"}
		name := d.label + ": honest"
		good := base
		good.Name = name
		if r, ok := reuse[name]; ok && bytes.Equal(r.Private, priv) && bytes.Equal(r.DeviceID, base.DeviceID) {
			good.Envelope = r.Envelope
		}
		if opened := good.Run(); opened.Error != "" || !bytes.Equal(opened.Plaintext, pt) || opened.From != e.From {
			sealEnvelope(e, dk.keys.HPKE.PublicKey(), pt)
			good.Envelope = must(e.MarshalBinary())
		}
		good = good.Run()
		f.Vectors = append(f.Vectors, good)
		parsed := must(client.ParseEnvelope(good.Envelope))
		variant := func(suffix string, edit func(e *client.Envelope) []byte) {
			c := *parsed
			v := base
			v.Name = d.label + ": " + suffix
			v.Envelope = edit(&c)
			f.Vectors = append(f.Vectors, v.Run())
		}
		variant("ciphertext flipped", func(e *client.Envelope) []byte { e.Ciphertext = flip(e.Ciphertext, 0); return must(e.MarshalBinary()) })
		variant("from changed (bound by the info)", func(e *client.Envelope) []byte { e.From = "mailto:mallory@example.com"; return must(e.MarshalBinary()) })
		variant("owner changed", func(e *client.Envelope) []byte { e.Owner = e.From; return must(e.MarshalBinary()) })
		variant("for another device", func(e *client.Envelope) []byte { e.Device[0] ^= 1; return must(e.MarshalBinary()) })
		variant("trailing byte", func(e *client.Envelope) []byte { return append(must(e.MarshalBinary()), 0) })
		variant("unknown version", func(e *client.Envelope) []byte { b := must(e.MarshalBinary()); b[0] = 3; return b })

		// Format 2: signed by the sender device's message key.
		msgKey := ed25519.NewKeyFromSeed(seed(d.label + " sender message"))
		base2 := base
		base2.SenderMessageKey = Hex(msgKey.Public().(ed25519.PublicKey))
		e2 := &client.Envelope{Version: client.EnvelopeV2, Suite: d.suite, Device: dk.keys.ID, From: "mailto:alice@example.com",
			To: "mailto:bob@example.com", Owner: "mailto:bob@example.com", Timestamp: uint64(T0.UnixMilli())}
		copy(e2.SenderDevice[:], seed(d.label+" sender device"))
		copy(e2.MessageID[:], seed(d.label+" message id"))
		name2 := d.label + ": format 2, honest"
		good2 := base2
		good2.Name = name2
		if r, ok := reuse[name2]; ok && bytes.Equal(r.Private, priv) && bytes.Equal(r.DeviceID, base.DeviceID) {
			good2.Envelope = r.Envelope
		}
		if opened := good2.Run(); opened.Error != "" || !bytes.Equal(opened.Plaintext, pt) || opened.SignatureValid == nil || !*opened.SignatureValid {
			sealEnvelope(e2, dk.keys.HPKE.PublicKey(), pt)
			e2.Sign(Origin, msgKey)
			good2.Envelope = must(e2.MarshalBinary())
		}
		good2 = good2.Run()
		f.Vectors = append(f.Vectors, good2)
		parsed2 := must(client.ParseEnvelope(good2.Envelope))
		variant2 := func(suffix string, edit func(e *client.Envelope) []byte) {
			c := *parsed2
			v := base2
			v.Name = d.label + ": format 2, " + suffix
			v.Envelope = edit(&c)
			f.Vectors = append(f.Vectors, v.Run())
		}
		variant2("signature flipped (opens, the signature does not verify)", func(e *client.Envelope) []byte { e.Signature[0] ^= 1; return must(e.MarshalBinary()) })
		variant2("ciphertext flipped", func(e *client.Envelope) []byte { e.Ciphertext = flip(e.Ciphertext, 0); return must(e.MarshalBinary()) })
		variant2("timestamp changed", func(e *client.Envelope) []byte { e.Timestamp++; return must(e.MarshalBinary()) })
		variant2("sender device changed", func(e *client.Envelope) []byte { e.SenderDevice[0] ^= 1; return must(e.MarshalBinary()) })
		variant2("message ID changed", func(e *client.Envelope) []byte { e.MessageID[0] ^= 1; return must(e.MarshalBinary()) })
		variant2("from changed", func(e *client.Envelope) []byte { e.From = "mailto:mallory@example.com"; return must(e.MarshalBinary()) })
		variant2("re-signed by another key", func(e *client.Envelope) []byte {
			e.Sign(Origin, ed25519.NewKeyFromSeed(seed("another message key")))
			return must(e.MarshalBinary())
		})
		variant2("truncated signature", func(e *client.Envelope) []byte { b := must(e.MarshalBinary()); return b[:len(b)-1] })
		variant2("empty from", func(e *client.Envelope) []byte {
			b := must(e.MarshalBinary())
			// version, suite (6), device (16), then from: length 0x0018.
			off := 1 + 6 + 16
			n := int(b[off])<<8 | int(b[off+1])
			return append(append(bytes.Clone(b[:off]), 0, 0), b[off+2+n:]...)
		})
	}
	return f
}

// Read returns the vector files in dir; a missing file is left out.
func Read(dir string) (Files, error) {
	fs := Files{}
	for _, name := range Names {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		fs[name] = b
	}
	return fs, nil
}
