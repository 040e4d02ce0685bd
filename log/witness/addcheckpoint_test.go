package witness_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/keytrans/kt/log/witness"
)

// specCheckpoint is the checkpoint of the C2SP tlog-witness example request.
const specCheckpoint = "example.com/behind-the-sofa\n" +
	"20852163\n" +
	"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n" +
	"\n" +
	"— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAddCheckpointGolden parses the example request body of C2SP
// tlog-witness (testdata/add-checkpoint-spec.txt, copied from the
// specification) and a body with old size 0, and marshals them back byte
// for byte.
func TestAddCheckpointGolden(t *testing.T) {
	spec, err := os.ReadFile("testdata/add-checkpoint-spec.txt")
	if err != nil {
		t.Fatal(err)
	}
	old0, err := os.ReadFile("testdata/add-checkpoint-old0.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file string
		body []byte
		want *witness.AddCheckpointRequest
	}{
		{"add-checkpoint-spec.txt", spec, &witness.AddCheckpointRequest{
			OldSize: 20852014,
			Proof: [][]byte{
				mustHex(t, "3e544d0abc07a6a846aeea6e7b42fb8316e36cc88a03db5e9afb996430e991ac"),
				mustHex(t, "8eb2590e663c63b4b2244d0c58ba4ba3390854c48c65c0f992fb8ac4f0b7b309"),
				mustHex(t, "e7ea4a954762d8b785fc170c1c19fe2aeeb284f18d0acc19643d57ffa4203ddf"),
				mustHex(t, "ffa59584fb360b04ac6f9ad8047e5c8c757fc12980efd69b5c0c215f0dca8ffd"),
			},
			Checkpoint: []byte(specCheckpoint + "— example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n"),
		}},
		{"add-checkpoint-old0.txt", old0, &witness.AddCheckpointRequest{
			OldSize:    0,
			Checkpoint: []byte(specCheckpoint),
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got, err := witness.ParseAddCheckpoint(tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseAddCheckpoint (-want +got):\n%s", diff)
			}
			b, err := tc.want.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, tc.body) {
				t.Errorf("Marshal = %q, want the golden body %q", b, tc.body)
			}
		})
	}
}

func TestParseAddCheckpointMalformed(t *testing.T) {
	hash := base64.StdEncoding.EncodeToString(make([]byte, 32))
	cp := specCheckpoint
	// A 32-byte hash whose last base64 character carries non-zero padding
	// bits: a lenient decoder accepts it, and it does not re-encode to
	// itself.
	nonCanonical := hash[:42] + "B="
	for _, tc := range []struct {
		name string
		body string
	}{
		{"empty body", ""},
		{"no newline", "old 0"},
		{"no old keyword", "0\n\n" + cp},
		{"capitalised keyword", "Old 0\n\n" + cp},
		{"tab instead of space", "old\t0\n\n" + cp},
		{"two spaces", "old  0\n\n" + cp},
		{"trailing space", "old 0 \n\n" + cp},
		{"carriage return", "old 0\r\n\r\n" + cp},
		{"empty size", "old \n\n" + cp},
		{"leading zero", "old 00\n\n" + cp},
		{"leading zero before digit", "old 07\n\n" + cp},
		{"plus sign", "old +0\n\n" + cp},
		{"negative", "old -1\n\n" + cp},
		{"hexadecimal", "old 0x1\n\n" + cp},
		{"underscore", "old 1_000\n\n" + cp},
		{"huge size", "old 99999999999999999999\n\n" + cp},
		{"size above 2^64-1", "old 18446744073709551616\n\n" + cp},
		{"no empty line", "old 0\n" + cp},
		{"no empty line, no checkpoint", "old 0\n" + hash + "\n"},
		{"bad base64 proof", "old 0\n!!!!\n\n" + cp},
		{"not base64 proof", "old 0\nnot base64\n\n" + cp},
		{"short proof hash", "old 0\nAAAA\n\n" + cp},
		{"31-byte proof hash", "old 1\n" + base64.StdEncoding.EncodeToString(make([]byte, 31)) + "\n\n" + cp},
		{"33-byte proof hash", "old 1\n" + base64.StdEncoding.EncodeToString(make([]byte, 33)) + "\n\n" + cp},
		{"unpadded proof hash", "old 1\n" + strings.TrimRight(hash, "=") + "\n\n" + cp},
		{"URL-safe base64", "old 1\n" + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)) + "\n\n" + cp},
		{"non-canonical padding bits", "old 1\n" + nonCanonical + "\n\n" + cp},
		{"carriage return in proof line", "old 1\n" + hash + "\r\n\n" + cp},
		{"space in proof line", "old 1\n" + hash[:20] + " " + hash[20:] + "\n\n" + cp},
		{"64 proof lines", "old 0\n" + strings.Repeat(hash+"\n", 64) + "\n" + cp},
		{"no checkpoint", "old 0\n\n"},
		{"no checkpoint after proof", "old 1\n" + hash + "\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := witness.ParseAddCheckpoint([]byte(tc.body))
			if err == nil {
				t.Fatalf("ParseAddCheckpoint(%q) = %+v, want an error", tc.body, r)
			}
			if !errors.Is(err, witness.ErrMalformedRequest) {
				t.Errorf("error %v does not wrap ErrMalformedRequest", err)
			}
		})
	}
}

// TestParseAddCheckpointAccepts covers the edges of what is valid: the
// witness, not the codec, rejects a proof with old size 0 (422), and the
// checkpoint is not looked into.
func TestParseAddCheckpointAccepts(t *testing.T) {
	hash := make([]byte, 32)
	line := base64.StdEncoding.EncodeToString(hash)
	for _, tc := range []struct {
		name string
		body string
		want *witness.AddCheckpointRequest
	}{
		{"largest size", "old 18446744073709551615\n\nx", &witness.AddCheckpointRequest{OldSize: 1<<64 - 1, Checkpoint: []byte("x")}},
		{"63 proof lines", "old 5\n" + strings.Repeat(line+"\n", 63) + "\nx", &witness.AddCheckpointRequest{OldSize: 5, Proof: slicesRepeat(hash, 63), Checkpoint: []byte("x")}},
		{"proof with old size 0", "old 0\n" + line + "\n\nx", &witness.AddCheckpointRequest{Proof: [][]byte{hash}, Checkpoint: []byte("x")}},
		{"checkpoint verbatim", "old 0\n\n\n\nnot\ra note", &witness.AddCheckpointRequest{Checkpoint: []byte("\n\nnot\ra note")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := witness.ParseAddCheckpoint([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func slicesRepeat(h []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = h
	}
	return out
}

func TestMarshalAddCheckpointRejects(t *testing.T) {
	hash := make([]byte, 32)
	for _, tc := range []struct {
		name string
		req  witness.AddCheckpointRequest
	}{
		{"64 proof hashes", witness.AddCheckpointRequest{OldSize: 1, Proof: slicesRepeat(hash, 64), Checkpoint: []byte("x")}},
		{"31-byte hash", witness.AddCheckpointRequest{OldSize: 1, Proof: [][]byte{hash[:31]}, Checkpoint: []byte("x")}},
		{"33-byte hash", witness.AddCheckpointRequest{OldSize: 1, Proof: [][]byte{append(hash, 0)}, Checkpoint: []byte("x")}},
		{"nil hash", witness.AddCheckpointRequest{OldSize: 1, Proof: [][]byte{nil}, Checkpoint: []byte("x")}},
		{"no checkpoint", witness.AddCheckpointRequest{OldSize: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.req.Marshal()
			if err == nil {
				t.Fatalf("Marshal = %q, want an error", b)
			}
			if !errors.Is(err, witness.ErrMalformedRequest) {
				t.Errorf("error %v does not wrap ErrMalformedRequest", err)
			}
		})
	}
}

// FuzzParseAddCheckpoint: every body ParseAddCheckpoint accepts is in its
// one canonical form (Marshal gives it back byte for byte), and parses
// again to the same request.
func FuzzParseAddCheckpoint(f *testing.F) {
	for _, name := range []string{"testdata/add-checkpoint-spec.txt", "testdata/add-checkpoint-old0.txt"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	hash := base64.StdEncoding.EncodeToString(make([]byte, 32))
	f.Add([]byte("old 0\n\n"))
	f.Add([]byte("old 00\n\nx"))
	f.Add([]byte("old 1\n" + hash + "\r\n\nx"))
	f.Add([]byte("old 1\n" + hash[:42] + "B=\n\nx"))
	f.Add([]byte("old 0\n" + strings.Repeat(hash+"\n", 64) + "\nx"))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := witness.ParseAddCheckpoint(body)
		if err != nil {
			if !errors.Is(err, witness.ErrMalformedRequest) {
				t.Fatalf("error %v does not wrap ErrMalformedRequest", err)
			}
			return
		}
		b, err := r.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed body %q: %v", body, err)
		}
		if !bytes.Equal(b, body) {
			t.Fatalf("Marshal(ParseAddCheckpoint(%q)) = %q", body, b)
		}
		r2, err := witness.ParseAddCheckpoint(b)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(r, r2); diff != "" {
			t.Fatalf("second parse differs (-first +second):\n%s", diff)
		}
	})
}

// FuzzMarshalAddCheckpoint: every request Marshal accepts parses back to
// itself (an empty proof may come back nil).
func FuzzMarshalAddCheckpoint(f *testing.F) {
	f.Add(uint64(0), []byte{}, []byte(specCheckpoint))
	f.Add(uint64(20852014), bytes.Repeat([]byte{7}, 4*32), []byte(specCheckpoint))
	f.Add(uint64(1<<64-1), bytes.Repeat([]byte{1}, 63*32), []byte("\n"))
	f.Add(uint64(3), bytes.Repeat([]byte{1}, 33), []byte("x"))
	f.Fuzz(func(t *testing.T, old uint64, proof, cp []byte) {
		// The proof is proof split into hashes of 32 bytes; a remainder
		// makes a short last hash.
		r := &witness.AddCheckpointRequest{OldSize: old, Checkpoint: cp}
		for len(proof) > 0 {
			n := min(len(proof), 32)
			r.Proof = append(r.Proof, proof[:n])
			proof = proof[n:]
		}
		b, err := r.Marshal()
		if err != nil {
			if !errors.Is(err, witness.ErrMalformedRequest) {
				t.Fatalf("error %v does not wrap ErrMalformedRequest", err)
			}
			valid := len(r.Proof) <= witness.MaxProofLines && len(cp) > 0
			for _, h := range r.Proof {
				valid = valid && len(h) == 32
			}
			if valid {
				t.Fatalf("Marshal(%+v): %v", r, err)
			}
			return
		}
		got, err := witness.ParseAddCheckpoint(b)
		if err != nil {
			t.Fatalf("ParseAddCheckpoint(Marshal(%+v)) = %v", r, err)
		}
		if diff := cmp.Diff(r, got, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
	})
}
