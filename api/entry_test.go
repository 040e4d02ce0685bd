package api

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// validEntries returns canonical encodings of every entry type.
func validEntries(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, c := range goldenCases() {
		if strings.HasPrefix(c.name, "change-") || c.name == "epoch" {
			out[c.name] = c.data
		}
	}
	return out
}

func TestEntryRoundTrip(t *testing.T) {
	for name, b := range validEntries(t) {
		t.Run(name, func(t *testing.T) {
			e, err := ParseEntry(b)
			if err != nil {
				t.Fatalf("ParseEntry: %v", err)
			}
			again, err := e.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary: %v", err)
			}
			if !bytes.Equal(again, b) {
				t.Fatalf("round trip changed the bytes:\n got %x\nwant %x", again, b)
			}
			prefixed, err := e.AppendBinary([]byte("xy"))
			if err != nil || !bytes.Equal(prefixed, append([]byte("xy"), b...)) {
				t.Fatalf("AppendBinary = %x, %v", prefixed, err)
			}
		})
	}
}

// TestLayout reads the golden entries at the offsets of the tables in
// docs/design.md, independently of the parser, so that the document and
// the code cannot drift apart.
func TestLayout(t *testing.T) {
	es := validEntries(t)
	t.Run("change", func(t *testing.T) {
		b := es["change-device"]
		r, err := ParseChangeRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		n := int(b[107])
		checks := []struct {
			name      string
			got, want []byte
		}{
			{"version+type", b[0:2], []byte{0x01, 0x01}},
			{"index", b[2:34], r.Index[:]},
			{"version", b[34:42], binary.BigEndian.AppendUint64(nil, 2)},
			{"commitment", b[42:74], r.Commitment[:]},
			{"prev", b[74:106], r.Prev[:]},
			{"kind", b[106:107], []byte{byte(AuthDevice)}},
			{"count", b[107:108], []byte{2}},
			{"authorizer 0", b[108:141], append([]byte{byte(r.Authorizers[0].Role)}, r.Authorizers[0].Digest[:]...)},
			{"signer", b[108+33*n : 140+33*n], r.Signer[:]},
			{"signature", b[140+33*n:], r.Signature[:]},
		}
		for _, c := range checks {
			if !bytes.Equal(c.got, c.want) {
				t.Errorf("%s: got %x, want %x", c.name, c.got, c.want)
			}
		}
		if len(b) != 204+33*n {
			t.Errorf("size %d, want 204+33n = %d", len(b), 204+33*n)
		}
	})
	t.Run("epoch", func(t *testing.T) {
		b := es["epoch"]
		if len(b) != 66 || EpochRecordSize != 66 {
			t.Fatalf("size %d (const %d), want 66", len(b), EpochRecordSize)
		}
		u := binary.BigEndian.Uint64
		if b[0] != 1 || b[1] != 2 || u(b[2:]) != 7 || u(b[10:]) != 1767225600123 || u(b[18:]) != 42 ||
			!bytes.Equal(b[26:58], seeded("map root", 32)) || u(b[58:]) != 1000 {
			t.Errorf("epoch layout differs from the design: %x", b)
		}
	})
	t.Run("deviceset", func(t *testing.T) {
		var b []byte
		for _, c := range goldenCases() {
			if c.name == "deviceset-strict" {
				b = c.data
			}
		}
		s, err := ParseDeviceSet(b)
		if err != nil {
			t.Fatal(err)
		}
		d := s.Devices[0]
		u16 := binary.BigEndian.Uint16
		if b[0] != 1 || !bytes.Equal(b[1:17], s.AccountID[:]) || b[17] != 1 ||
			!bytes.Equal(b[18:34], d.ID[:]) || u16(b[34:]) != 0x0020 || u16(b[36:]) != 1 || u16(b[38:]) != 1 ||
			u16(b[40:]) != 32 || !bytes.Equal(b[42:74], d.HPKEKey) || !bytes.Equal(b[74:106], d.SigningKey[:]) ||
			binary.BigEndian.Uint64(b[106:]) != d.Created || b[114] != 1 ||
			!bytes.Equal(b[115:147], s.Account.Key[:]) || !bytes.Equal(b[147:211], s.Account.Signature[:]) || len(b) != 211 {
			t.Errorf("device set layout differs from the design: %x", b)
		}
	})
}

func TestParseEntryTruncated(t *testing.T) {
	for name, b := range validEntries(t) {
		t.Run(name, func(t *testing.T) {
			for n := 0; n < len(b); n++ {
				_, err := ParseEntry(b[:n])
				var fe *FormatError
				if !errors.As(err, &fe) || !errors.Is(err, ErrMalformed) {
					t.Fatalf("prefix of %d/%d bytes: err = %v, want *FormatError wrapping ErrMalformed", n, len(b), err)
				}
			}
		})
	}
}

// mutate returns a copy of b with f applied.
func mutate(b []byte, f func([]byte) []byte) []byte { return f(bytes.Clone(b)) }

func TestParseEntryRejects(t *testing.T) {
	es := validEntries(t)
	change, epoch := es["change-device"], es["epoch"]
	n := int(change[107])
	tests := []struct {
		name    string
		in      []byte
		wantOff int
	}{
		{"empty", nil, 0},
		{"trailing byte change", append(bytes.Clone(change), 0), len(change)},
		{"trailing byte epoch", append(bytes.Clone(epoch), 0), len(epoch)},
		{"version 0x00", mutate(change, func(b []byte) []byte { b[0] = 0; return b }), 0},
		{"version 0x02", mutate(epoch, func(b []byte) []byte { b[0] = 2; return b }), 0},
		{"type 0x00", mutate(change, func(b []byte) []byte { b[1] = 0; return b }), 1},
		{"type 0x05", mutate(change, func(b []byte) []byte { b[1] = 5; return b }), 1},
		{"change as rotation", mutate(change, func(b []byte) []byte { b[1] = 3; return b }), -1},
		{"change version 0", mutate(change, func(b []byte) []byte { clear(b[34:42]); return b }), 34},
		{"kind 0", mutate(change, func(b []byte) []byte { b[106] = 0; return b }), 106},
		{"kind 5", mutate(change, func(b []byte) []byte { b[106] = 5; return b }), 106},
		{"count over limit", mutate(change, func(b []byte) []byte { b[107] = MaxAuthorizers + 1; return b }), 107},
		{"count larger than data", mutate(change, func(b []byte) []byte { b[107] = byte(n + 3); return b }), -1},
		{"count smaller than data", mutate(change, func(b []byte) []byte { b[107] = byte(n - 1); return b }), len(change) - 33},
		{"role 0", mutate(change, func(b []byte) []byte { b[108] = 0; return b }), 108},
		{"role 3", mutate(change, func(b []byte) []byte { b[108] = 3; return b }), 108},
		{"authorizers swapped", mutate(change, func(b []byte) []byte {
			a0 := bytes.Clone(b[108:141])
			copy(b[108:141], b[141:174])
			copy(b[141:174], a0)
			return b
		}), 141},
		{"authorizer duplicate", mutate(change, func(b []byte) []byte { copy(b[141:174], b[108:141]); return b }), 141},
		{"two account authorizers", mutate(change, func(b []byte) []byte {
			b[108], b[141] = 2, 2
			b[109], b[142] = 0, 1
			return b
		}), 141},
		{"epoch as change", mutate(epoch, func(b []byte) []byte { b[1] = 1; return b }), -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ParseEntry(tt.in)
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseEntry = %v, %v; want *FormatError wrapping ErrMalformed", e, err)
			}
			if tt.wantOff >= 0 && fe.Offset != tt.wantOff {
				t.Errorf("error %q at offset %d, want %d", err, fe.Offset, tt.wantOff)
			}
		})
	}
}

func TestChangeRecordMarshalRejects(t *testing.T) {
	rec, err := ParseChangeRecord(validEntries(t)["change-device"])
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(r *ChangeRecord)
	}{
		{"version 0", func(r *ChangeRecord) { r.Version = 0 }},
		{"kind 9", func(r *ChangeRecord) { r.Kind = 9 }},
		{"unsorted", func(r *ChangeRecord) { r.Authorizers[0], r.Authorizers[1] = r.Authorizers[1], r.Authorizers[0] }},
		{"duplicate", func(r *ChangeRecord) { r.Authorizers[1] = r.Authorizers[0] }},
		{"bad role", func(r *ChangeRecord) { r.Authorizers[1].Role = 7 }},
		{"too many", func(r *ChangeRecord) {
			r.Authorizers = make([]Authorizer, MaxAuthorizers+1)
			for i := range r.Authorizers {
				r.Authorizers[i] = Authorizer{Role: RoleDevice, Digest: [32]byte{byte(i)}}
			}
		}},
		{"two accounts", func(r *ChangeRecord) {
			r.Authorizers = []Authorizer{{RoleAccount, [32]byte{1}}, {RoleAccount, [32]byte{2}}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := *rec
			r.Authorizers = append([]Authorizer(nil), rec.Authorizers...)
			tt.edit(&r)
			if _, err := r.MarshalBinary(); !errors.Is(err, ErrMalformed) {
				t.Fatalf("MarshalBinary err = %v, want ErrMalformed", err)
			}
		})
	}
	// The maximum is accepted and has the documented size.
	r := *rec
	r.Authorizers = []Authorizer{{RoleAccount, [32]byte{}}}
	for i := 0; i < MaxDevices; i++ {
		r.Authorizers = append(r.Authorizers, Authorizer{RoleDevice, [32]byte{byte(i)}})
	}
	SortAuthorizers(r.Authorizers)
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != ChangeRecordMaxSize {
		t.Errorf("largest change record has %d bytes, want %d", len(b), ChangeRecordMaxSize)
	}
	back, err := ParseChangeRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&r, back); diff != "" {
		t.Error(diff)
	}
}
