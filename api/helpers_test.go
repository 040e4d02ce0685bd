package api

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

const testOrigin = "example.com/kt"

// seeded returns n deterministic bytes derived from label.
func seeded(label string, n int) []byte {
	var out []byte
	for i := uint32(0); len(out) < n; i++ {
		var ctr [4]byte
		binary.BigEndian.PutUint32(ctr[:], i)
		h := sha256.Sum256(append([]byte(label), ctr[:]...))
		out = append(out, h[:]...)
	}
	return out[:n]
}

func seeded32(label string) (a [32]byte) { copy(a[:], seeded(label, 32)); return }
func seeded16(label string) (a [16]byte) { copy(a[:], seeded(label, 16)); return }

// testKey returns a deterministic Ed25519 key and its public key as an array.
func testKey(label string) (ed25519.PrivateKey, [32]byte) {
	k := ed25519.NewKeyFromSeed(seeded("ed25519 "+label, 32))
	return k, [32]byte(k.Public().(ed25519.PublicKey))
}

func x25519Key(label string) []byte {
	k, err := ecdh.X25519().NewPrivateKey(seeded("x25519 "+label, 32))
	if err != nil {
		panic(err)
	}
	return k.PublicKey().Bytes()
}

// testDevice returns a deterministic device; hybrid selects the
// MLKEM768-X25519 suite (with a placeholder key of the right size).
func testDevice(label string, hybrid bool) (Device, ed25519.PrivateKey) {
	priv, pub := testKey("device " + label)
	d := Device{
		ID:         seeded16("device id " + label),
		Suite:      SuiteX25519,
		HPKEKey:    x25519Key(label),
		SigningKey: pub,
		Created:    1767225600, // 2026-01-01T00:00:00Z
	}
	if hybrid {
		d.Suite = SuiteHybrid
		d.HPKEKey = seeded("hybrid "+label, 1216)
	}
	return d, priv
}

// testSet returns a device set with the given devices, sorted.
func testSet(devs ...Device) *DeviceSet {
	s := &DeviceSet{AccountID: seeded16("account"), Devices: devs}
	sortDevices(s.Devices)
	return s
}

// testSetV2 returns a format-0x02 set of devs, each given a deterministic
// message-signing key.
func testSetV2(devs ...Device) *DeviceSet {
	s := testSet(devs...)
	s.Format = DeviceSetV2
	for i := range s.Devices {
		_, s.Devices[i].MessageKey = testKey(fmt.Sprintf("message %x", s.Devices[i].ID))
	}
	return s
}

func sortDevices(ds []Device) {
	for i := 1; i < len(ds); i++ {
		for j := i; j > 0 && string(ds[j-1].ID[:]) > string(ds[j].ID[:]); j-- {
			ds[j-1], ds[j] = ds[j], ds[j-1]
		}
	}
}

// testRecord returns a canonical, signed change record committing to s.
func testRecord(s *DeviceSet, version uint64, prev [32]byte, kind AuthKind, signer ed25519.PrivateKey) (*ChangeRecord, [32]byte, []byte) {
	value, err := s.MarshalBinary()
	if err != nil {
		panic(err)
	}
	opening := seeded32("opening " + string(rune('0'+version)))
	r := &ChangeRecord{
		Index:       seeded32("vrf index alice"),
		Version:     version,
		Commitment:  Commit(opening, seeded32("vrf index alice"), version, value),
		Prev:        prev,
		Kind:        kind,
		Authorizers: s.Authorizers(),
	}
	r.Sign(testOrigin, signer)
	return r, opening, value
}

func mustMarshal(m interface{ MarshalBinary() ([]byte, error) }) []byte {
	b, err := m.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b
}
