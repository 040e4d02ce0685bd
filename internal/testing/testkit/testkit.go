// Package testkit holds the small helpers that tests of every layer share:
// note (log) keys, client devices with their private keys, and, for
// benchmarks, the process's CPU time and a concurrent Append load. It
// imports only package api and the standard library's and x/mod's crypto,
// so that the tests of low-level packages (log/..., directory) can use it
// without importing a whole deployment; the in-process deployment is
// package internal/testing/fixture.
package testkit

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
)

// NoteKey returns a fresh Ed25519 note key pair named name (a log's
// origin, a witness's name): its signer and verifier key strings, and the
// signer and verifier built from them.
func NoteKey(t testing.TB, name string) (skey, vkey string, s note.Signer, v note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	if s, err = note.NewSigner(skey); err != nil {
		t.Fatal(err)
	}
	if v, err = note.NewVerifier(vkey); err != nil {
		t.Fatal(err)
	}
	return skey, vkey, s, v
}

// Created is the creation time (Unix seconds) of every Device's
// api.Device.
const Created = 1700000000

// Device is a client device with its private keys: an ID, an Ed25519
// signing key and an X25519 HPKE key (api.SuiteX25519).
type Device struct {
	ID   [16]byte
	Sign ed25519.PrivateKey
	HPKE []byte // the HPKE public key
}

// NewDevice returns a device with a random ID and fresh keys.
func NewDevice() *Device {
	d := &Device{}
	rand.Read(d.ID[:])
	_, d.Sign, _ = ed25519.GenerateKey(nil) // reads crypto/rand, which does not fail
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	d.HPKE = k.PublicKey().Bytes()
	return d
}

// Rekeyed returns the same device (same ID) with fresh keys.
func (d *Device) Rekeyed() *Device {
	n := NewDevice()
	n.ID = d.ID
	return n
}

// Pub returns the device's signing public key.
func (d *Device) Pub() [32]byte { return [32]byte(d.Sign.Public().(ed25519.PublicKey)) }

// API returns the device as a device set lists it.
func (d *Device) API() api.Device {
	return api.Device{ID: d.ID, Suite: api.SuiteX25519, HPKEKey: d.HPKE, SigningKey: d.Pub(), Created: Created}
}

// Set returns the device set of account holding ds, sorted by ID.
func Set(account [16]byte, ds ...*Device) *api.DeviceSet {
	s := &api.DeviceSet{AccountID: account}
	for _, d := range ds {
		s.Devices = append(s.Devices, d.API())
	}
	slices.SortFunc(s.Devices, func(a, b api.Device) int { return slices.Compare(a.ID[:], b.ID[:]) })
	return s
}

// Pubs returns the devices' signing keys, sorted.
func Pubs(ds ...*Device) [][32]byte {
	var out [][32]byte
	for _, d := range ds {
		out = append(out, d.Pub())
	}
	slices.SortFunc(out, func(a, b [32]byte) int { return slices.Compare(a[:], b[:]) })
	return out
}

// CPUTime returns the user plus system CPU time this process has used, or
// 0 when the system does not say.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
