package api

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func goldenData(t *testing.T, name string) []byte {
	t.Helper()
	for _, c := range goldenCases() {
		if c.name == name {
			return c.data
		}
	}
	t.Fatalf("no golden case %q", name)
	return nil
}

func TestDeviceSetRoundTrip(t *testing.T) {
	for _, name := range []string{"deviceset-strict", "deviceset-two", "deviceset-tombstone", "deviceset-v2", "deviceset-v2-upgrading"} {
		t.Run(name, func(t *testing.T) {
			b := goldenData(t, name)
			s, err := ParseDeviceSet(b)
			if err != nil {
				t.Fatal(err)
			}
			again, err := s.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, b) {
				t.Fatalf("round trip changed the bytes:\n got %x\nwant %x", again, b)
			}
			for n := 0; n < len(b); n++ {
				if _, err := ParseDeviceSet(b[:n]); !errors.Is(err, ErrMalformed) {
					t.Fatalf("prefix of %d/%d bytes: err = %v, want ErrMalformed", n, len(b), err)
				}
			}
		})
	}
}

func TestDeviceSetMaximum(t *testing.T) {
	var devs []Device
	for i := 0; i < MaxDevices; i++ {
		d, _ := testDevice(string(rune('A'+i)), true)
		devs = append(devs, d)
	}
	s := testSet(devs...)
	acct, _ := testKey("account")
	s.SignAccount(testOrigin, [32]byte{1}, 5, acct)
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseDeviceSet(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s, back); diff != "" {
		t.Fatal(diff)
	}
	if err := back.VerifyAccount(testOrigin, [32]byte{1}, 5); err != nil {
		t.Fatal(err)
	}
	d, _ := testDevice("one too many", false)
	s.Devices = append(s.Devices, d)
	sortDevices(s.Devices)
	if _, err := s.MarshalBinary(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("%d devices: err = %v, want ErrMalformed", len(s.Devices), err)
	}
}

func TestParseDeviceSetRejects(t *testing.T) {
	two := goldenData(t, "deviceset-two")       // devices at 18 (X25519 or hybrid, sorted by ID)
	strict := goldenData(t, "deviceset-strict") // one X25519 device, account key at 114
	s2, err := ParseDeviceSet(two)
	if err != nil {
		t.Fatal(err)
	}
	firstLen := 64 + len(s2.Devices[0].HPKEKey)
	second := 18 + firstLen
	tests := []struct {
		name    string
		in      []byte
		wantOff int
	}{
		{"empty", nil, 0},
		{"version 0x03", mutate(strict, func(b []byte) []byte { b[0] = 3; return b }), 0},
		{"version 0x00", mutate(strict, func(b []byte) []byte { b[0] = 0; return b }), 0},
		{"trailing byte", append(bytes.Clone(strict), 0), len(strict)},
		{"count over limit", mutate(strict, func(b []byte) []byte { b[17] = MaxDevices + 1; return b }), 17},
		{"unsorted devices", mutate(two, func(b []byte) []byte {
			copy(b[second:second+16], bytes.Repeat([]byte{0}, 16))
			return b
		}), second},
		{"duplicate device ID", mutate(two, func(b []byte) []byte { copy(b[second:second+16], b[18:34]); return b }), second},
		{"unknown KEM", mutate(strict, func(b []byte) []byte { binary.BigEndian.PutUint16(b[34:], 0x0021); return b }), 34},
		{"unknown KDF", mutate(strict, func(b []byte) []byte { binary.BigEndian.PutUint16(b[36:], 0x0004); return b }), 34},
		{"export-only AEAD", mutate(strict, func(b []byte) []byte { binary.BigEndian.PutUint16(b[38:], 0xffff); return b }), 34},
		{"key length wrong for KEM", mutate(strict, func(b []byte) []byte { binary.BigEndian.PutUint16(b[40:], 31); return b }), 40},
		{"key length over limit", mutate(strict, func(b []byte) []byte { binary.BigEndian.PutUint16(b[40:], 4096); return b }), 40},
		{"presence byte 2", mutate(strict, func(b []byte) []byte { b[114] = 2; return b }), 114},
		{"presence 0 with key", mutate(strict, func(b []byte) []byte { b[114] = 0; return b }), 115},
		{"presence 1 without key", mutate(strict, func(b []byte) []byte { return b[:115] }), 115},
		{"account key equals device key", mutate(strict, func(b []byte) []byte { copy(b[115:147], b[74:106]); return b }), -1},
		{"two devices share a signing key", func() []byte {
			d1, _ := testDevice("x", false)
			d2, _ := testDevice("y", false)
			d2.SigningKey = d1.SigningKey
			s := testSet(d1, d2)
			b := s.appendUnsigned(nil) // bypass the marshal-time check
			return b
		}(), -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseDeviceSet(tt.in)
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseDeviceSet = %+v, %v; want *FormatError", s, err)
			}
			if tt.wantOff >= 0 && fe.Offset != tt.wantOff {
				t.Errorf("error %q at offset %d, want %d", err, fe.Offset, tt.wantOff)
			}
		})
	}
}

// TestDeviceSetV2 checks format 0x02 (design.md 5.3): message keys round
// trip, a format-0x01 set still parses and keeps its format, the
// authorizers do not depend on the format or the message keys, and every
// key of a set, message keys included, is distinct.
func TestDeviceSetV2(t *testing.T) {
	v2 := goldenData(t, "deviceset-v2")
	s, err := ParseDeviceSet(v2)
	if err != nil {
		t.Fatal(err)
	}
	if s.Format != DeviceSetV2 || len(s.Devices) != 2 || !s.Devices[0].HasMessageKey() || !s.Devices[1].HasMessageKey() {
		t.Fatalf("parsed %+v", s)
	}
	v1, err := ParseDeviceSet(goldenData(t, "deviceset-two"))
	if err != nil {
		t.Fatal(err)
	}
	if v1.Format != 0 || v1.Devices[0].HasMessageKey() {
		t.Fatalf("format 0x01 set parsed as %+v", v1)
	}
	part, err := ParseDeviceSet(goldenData(t, "deviceset-v2-upgrading"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(v1.Authorizers(), part.Authorizers()); diff != "" {
		t.Errorf("authorizers depend on the format or the message keys:\n%s", diff)
	}
	if n := len(part.Devices); n != 2 || part.Devices[0].HasMessageKey() == part.Devices[1].HasMessageKey() {
		t.Fatalf("upgrading set: %+v", part)
	}

	// Layout: version, account ID (16), count, then each device: ID (16),
	// suite (6), key length (2), HPKE key, signing key, message key,
	// created (8).
	a := 18
	sig := a + 16 + 6 + 2 + len(s.Devices[0].HPKEKey)
	msg := sig + 32
	b := msg + 32 + 8
	bSig := b + 16 + 6 + 2 + len(s.Devices[1].HPKEKey)
	bMsg := bSig + 32
	if !bytes.Equal(v2[sig:sig+32], s.Devices[0].SigningKey[:]) ||
		!bytes.Equal(v2[msg:msg+32], s.Devices[0].MessageKey[:]) || !bytes.Equal(v2[bMsg:bMsg+32], s.Devices[1].MessageKey[:]) {
		t.Fatalf("layout: the keys are not at the offsets of design.md 5.3")
	}
	acct := len(v2) - 64 - 32
	for name, edit := range map[string]func(b []byte){
		"message key equals own signing key":         func(b []byte) { copy(b[msg:msg+32], b[sig:sig+32]) },
		"message key equals another's signing key":   func(b []byte) { copy(b[msg:msg+32], b[bSig:bSig+32]) },
		"two devices share a message key":            func(b []byte) { copy(b[bMsg:bMsg+32], b[msg:msg+32]) },
		"message key equals the account key":         func(b []byte) { copy(b[msg:msg+32], b[acct:acct+32]) },
		"format 0x02 bytes read as 0x01":             func(b []byte) { b[0] = DeviceSetV1 },
		"format 0x01 bytes read as 0x02 (truncated)": nil,
	} {
		t.Run(name, func(t *testing.T) {
			in := bytes.Clone(v2)
			if edit == nil {
				in = bytes.Clone(goldenData(t, "deviceset-strict"))
				in[0] = DeviceSetV2
			} else {
				edit(in)
			}
			if got, err := ParseDeviceSet(in); !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseDeviceSet = %+v, %v; want ErrMalformed", got, err)
			}
		})
	}
}

func TestDeviceSetMarshalRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(s *DeviceSet)
	}{
		{"unsorted", func(s *DeviceSet) { s.Devices[0], s.Devices[1] = s.Devices[1], s.Devices[0] }},
		{"duplicate ID", func(s *DeviceSet) { s.Devices[1].ID = s.Devices[0].ID }},
		{"short HPKE key", func(s *DeviceSet) { s.Devices[0].HPKEKey = s.Devices[0].HPKEKey[:10] }},
		{"unknown suite", func(s *DeviceSet) { s.Devices[0].Suite.AEAD = 9 }},
		{"shared signing key", func(s *DeviceSet) { s.Devices[1].SigningKey = s.Devices[0].SigningKey }},
		{"account key is a device key", func(s *DeviceSet) { s.Account = &AccountKey{Key: s.Devices[0].SigningKey} }},
		{"message key in format 0x01", func(s *DeviceSet) { s.Format, s.Devices[0].MessageKey = DeviceSetV1, [32]byte{7} }},
		{"unknown format 0x03", func(s *DeviceSet) { s.Format = 3 }},
		{"message key is own signing key", func(s *DeviceSet) {
			s.Format = DeviceSetV2
			s.Devices[0].MessageKey = s.Devices[0].SigningKey
		}},
		{"message key is another's message key", func(s *DeviceSet) {
			s.Format = DeviceSetV2
			s.Devices[0].MessageKey, s.Devices[1].MessageKey = [32]byte{7}, [32]byte{7}
		}},
		{"message key is the account key", func(s *DeviceSet) {
			s.Format = DeviceSetV2
			s.Devices[0].MessageKey = [32]byte{7}
			s.Account = &AccountKey{Key: [32]byte{7}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := testDevice("a", false)
			b, _ := testDevice("b", true)
			s := testSet(a, b)
			tt.edit(s)
			if _, err := s.MarshalBinary(); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestAccountSignature(t *testing.T) {
	acct, _ := testKey("account")
	other, _ := testKey("other")
	a, _ := testDevice("a", false)
	b, _ := testDevice("b", false)
	index := seeded32("index")
	signed := func() *DeviceSet {
		s := testSet(a)
		s.SignAccount(testOrigin, index, 3, acct)
		return s
	}
	if err := signed().VerifyAccount(testOrigin, index, 3); err != nil {
		t.Fatalf("valid signature: %v", err)
	}
	tests := []struct {
		name    string
		s       *DeviceSet
		origin  string
		index   [32]byte
		version uint64
	}{
		{"other origin", signed(), "other.example/kt", index, 3},
		{"other handle", signed(), testOrigin, seeded32("index 2"), 3},
		{"replayed as a later version", signed(), testOrigin, index, 4},
		{"device added after signing", func() *DeviceSet {
			s := signed()
			s.Devices = append(s.Devices, b)
			sortDevices(s.Devices)
			return s
		}(), testOrigin, index, 3},
		{"account ID changed", func() *DeviceSet { s := signed(); s.AccountID[0] ^= 1; return s }(), testOrigin, index, 3},
		{"signed by another key", func() *DeviceSet {
			s := signed()
			k := s.Account.Key
			s.SignAccount(testOrigin, index, 3, other)
			s.Account.Key = k
			return s
		}(), testOrigin, index, 3},
		{"no account key", testSet(a), testOrigin, index, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.s.VerifyAccount(tt.origin, tt.index, tt.version); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("err = %v, want ErrBadSignature", err)
			}
		})
	}
}
