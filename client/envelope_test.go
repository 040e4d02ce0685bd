package client_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
)

// nilDir is a Directory client for tests that make no call.
type nilDir struct{ ktpb.DirectoryClient }

func testParams(t *testing.T) *client.Params { return newKeys(t).params(t) }

// TestEnvelopeSuites encrypts to a verified set with an X25519 and a
// hybrid MLKEM768-X25519 device and decrypts each with its keys; every
// bound field changes the result.
func TestEnvelopeSuites(t *testing.T) {
	for _, suite := range []api.HPKESuite{api.SuiteX25519, api.SuiteHybrid} {
		t.Run(suite.String(), func(t *testing.T) {
			k, err := client.GenerateDevice(suite, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			// The keys survive persistence.
			b, _ := k.MarshalBinary()
			var k2 client.DeviceKeys
			if err := k2.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			env, err := client.SealForTest(k.Device(), "mailto:a@example.com", "mailto:b@example.com", "mailto:b@example.com", []byte("msg"))
			if err != nil {
				t.Fatal(err)
			}
			eb, err := env.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := client.ParseEnvelope(eb)
			if err != nil {
				t.Fatal(err)
			}
			if pt, err := parsed.Open(&k2); err != nil || string(pt) != "msg" {
				t.Fatalf("Open: %q, %v", pt, err)
			}
			for name, mod := range map[string]func(e *client.Envelope){
				"from":       func(e *client.Envelope) { e.From = "mailto:x@example.com" },
				"to":         func(e *client.Envelope) { e.To = "mailto:x@example.com" },
				"owner":      func(e *client.Envelope) { e.Owner = "mailto:x@example.com" },
				"ciphertext": func(e *client.Envelope) { e.Ciphertext[0] ^= 1 },
				"enc":        func(e *client.Envelope) { e.Enc[0] ^= 1 },
			} {
				e, _ := client.ParseEnvelope(eb)
				mod(e)
				if _, err := e.Open(&k2); !errors.Is(err, client.ErrEnvelope) {
					t.Errorf("%s modified: %v", name, err)
				}
			}
			other, _ := client.GenerateDevice(suite, time.Now())
			if _, err := parsed.Open(other); !errors.Is(err, client.ErrEnvelope) {
				t.Errorf("another device: %v", err)
			}
		})
	}
}

// TestEnvelopeV2 seals and signs format-2 envelopes to both suites: they
// round-trip, open, verify under the sender's message key for the origin,
// and every field is bound by the signature (and the header also by the
// HPKE info).
func TestEnvelopeV2(t *testing.T) {
	const origin = "example.com/kt"
	sender, _ := client.GenerateDevice(api.SuiteX25519, time.Now())
	msgKey := sender.MessagePublic()
	for _, suite := range []api.HPKESuite{api.SuiteX25519, api.SuiteHybrid} {
		t.Run(suite.String(), func(t *testing.T) {
			k, err := client.GenerateDevice(suite, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			env, err := client.SealSignedForTest(k.Device(), "mailto:a@example.com", "mailto:b@example.com", "mailto:b@example.com",
				sender.ID, 1767225600123, [16]byte{1, 2}, origin, sender.Message, []byte("msg"))
			if err != nil {
				t.Fatal(err)
			}
			eb, err := env.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if eb[0] != client.EnvelopeV2 {
				t.Fatalf("version %d", eb[0])
			}
			parsed, err := client.ParseEnvelope(eb)
			if err != nil {
				t.Fatal(err)
			}
			if parsed.SenderDevice != sender.ID || parsed.Timestamp != 1767225600123 || parsed.MessageID != [16]byte{1, 2} {
				t.Fatalf("parsed %+v", parsed)
			}
			if err := parsed.VerifySignature(origin, msgKey); err != nil {
				t.Fatal(err)
			}
			if pt, err := parsed.Open(k); err != nil || string(pt) != "msg" {
				t.Fatalf("Open: %q, %v", pt, err)
			}
			if err := parsed.VerifySignature("other.example/kt", msgKey); !errors.Is(err, client.ErrMessageSignature) {
				t.Errorf("another origin: %v", err)
			}
			if err := parsed.VerifySignature(origin, sender.SigningPublic()); !errors.Is(err, client.ErrMessageSignature) {
				t.Errorf("the device signing key: %v", err)
			}
			for name, mod := range map[string]func(e *client.Envelope){
				"from":          func(e *client.Envelope) { e.From = "mailto:x@example.com" },
				"to":            func(e *client.Envelope) { e.To = "mailto:x@example.com" },
				"owner":         func(e *client.Envelope) { e.Owner = "mailto:x@example.com" },
				"device":        func(e *client.Envelope) { e.Device[0] ^= 1 },
				"suite":         func(e *client.Envelope) { e.Suite.AEAD = api.AEADAES256GCM },
				"sender device": func(e *client.Envelope) { e.SenderDevice[0] ^= 1 },
				"timestamp":     func(e *client.Envelope) { e.Timestamp++ },
				"message ID":    func(e *client.Envelope) { e.MessageID[0] ^= 1 },
				"enc":           func(e *client.Envelope) { e.Enc[0] ^= 1 },
				"ciphertext":    func(e *client.Envelope) { e.Ciphertext[0] ^= 1 },
				"signature":     func(e *client.Envelope) { e.Signature[0] ^= 1 },
			} {
				e, _ := client.ParseEnvelope(eb)
				mod(e)
				if err := e.VerifySignature(origin, msgKey); !errors.Is(err, client.ErrMessageSignature) || !errors.Is(err, client.ErrEnvelope) {
					t.Errorf("%s modified: signature %v", name, err)
				}
				if name == "signature" {
					continue
				}
				if _, err := e.Open(k); !errors.Is(err, client.ErrEnvelope) {
					t.Errorf("%s modified: opens (%v)", name, err)
				}
			}
			for name, b := range map[string][]byte{
				"truncated signature": eb[:len(eb)-1],
				"trailing byte":       append(bytes.Clone(eb), 0),
				"version 3":           append([]byte{3}, eb[1:]...),
			} {
				if _, err := client.ParseEnvelope(b); !errors.Is(err, client.ErrEnvelope) {
					t.Errorf("%s: %v", name, err)
				}
			}
			empty := *parsed
			empty.From = ""
			if _, err := empty.MarshalBinary(); !errors.Is(err, client.ErrEnvelope) {
				t.Errorf("format 2 without a sender encodes: %v", err)
			}
		})
	}
}

func TestDescriptor(t *testing.T) {
	k, _ := client.GenerateDevice(api.SuiteHybrid, time.Now())
	d, err := client.ParseDescriptor(k.Descriptor())
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != k.ID || !bytes.Equal(d.HPKEKey, k.Device().HPKEKey) || d.SigningKey != k.SigningPublic() {
		t.Fatal("descriptor does not round-trip")
	}
	good := k.Descriptor()
	other, _ := client.GenerateDevice(api.SuiteX25519, time.Now())
	for name, s := range map[string]string{
		"empty":          "",
		"no prefix":      good[len("kt-device:"):],
		"bad base64":     good + "!",
		"truncated":      good[:len(good)-10],
		"bit flipped":    good[:len(good)-3] + string(good[len(good)-3]^1) + good[len(good)-2:],
		"other device's": good[:40] + other.Descriptor()[40:],
	} {
		if _, err := client.ParseDescriptor(s); !errors.Is(err, client.ErrDescriptor) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzParseEnvelope(f *testing.F) {
	k, _ := client.GenerateDevice(api.SuiteX25519, time.Now())
	env, _ := client.SealForTest(k.Device(), "a", "b", "b", []byte("seed"))
	b, _ := env.MarshalBinary()
	f.Add(b)
	f.Add([]byte{1})
	f.Add([]byte{2})
	for _, suite := range []api.HPKESuite{api.SuiteX25519, api.SuiteHybrid} {
		d, _ := client.GenerateDevice(suite, time.Now())
		env2, _ := client.SealSignedForTest(d.Device(), "mailto:a@example.com", "mailto:b@example.com", "mailto:a@example.com",
			k.ID, 1767225600123, [16]byte{9}, "example.com/kt", k.Message, []byte("seed"))
		b2, _ := env2.MarshalBinary()
		f.Add(b2)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := client.ParseEnvelope(b)
		if err != nil {
			if !errors.Is(err, client.ErrEnvelope) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		b2, err := e.MarshalBinary()
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("re-encoding differs")
		}
		if e.Version == client.EnvelopeV2 && e.From == "" {
			t.Fatalf("format 2 without a sender parsed")
		}
		e.Open(k) // must not panic
		if err := e.VerifySignature("example.com/kt", k.MessagePublic()); err != nil && !errors.Is(err, client.ErrMessageSignature) {
			t.Fatalf("untyped signature error %v", err)
		}
	})
}

func FuzzParseDescriptor(f *testing.F) {
	k, _ := client.GenerateDevice(api.SuiteX25519, time.Now())
	f.Add(k.Descriptor())
	f.Add("kt-device:")
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := client.ParseDescriptor(s); err != nil && !errors.Is(err, client.ErrDescriptor) {
			t.Fatalf("untyped error %v", err)
		}
	})
}

func FuzzUnmarshalState(f *testing.F) {
	k, _ := client.GenerateDevice(api.SuiteX25519, time.Now())
	b, _ := (&client.State{Device: k, Pins: map[string][32]byte{"mailto:b@example.com": {1}}}).MarshalBinary()
	f.Add(b)
	f.Add([]byte(`{"version":1}`))
	k2, _ := client.GenerateDevice(api.SuiteHybrid, time.Now())
	b2, _ := (&client.State{Device: k2, Seen: &client.SeenMessages{Mark: 3, Entries: []client.SeenMessage{{Key: [32]byte{1}, Time: 4}}}}).MarshalBinary()
	f.Add(b2)
	f.Add([]byte(`{"version":1,"refused":{"o+01020304":{"kind":"fork","id":"2c77502576a3334539e59c5a019ce155172c1e843ba6d2ec626b0a825884b40f","what":"","bundle":"a3QtZXZpZGVuY2UvdjEK","time":"2023-11-14T22:13:20Z"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s client.State
		if err := s.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, client.ErrState) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if _, err := s.MarshalBinary(); err != nil {
			t.Fatalf("a decoded state does not encode: %v", err)
		}
	})
}

func FuzzVerifyEvidence(f *testing.F) {
	f.Add([]byte("kt-evidence/v1\ncheckpoint AAAA\ncheckpoint AAAA\nproof " + strings.Repeat("A", 43) + "=\n"))
	f.Add([]byte("kt-evidence/v1\n"))
	p := newKeys(f).params(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := client.VerifyEvidence(p, b); !errors.Is(err, client.ErrEvidence) {
			t.Fatalf("unsigned input accepted or untyped error: %v", err)
		}
	})
}
