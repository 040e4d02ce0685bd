package log_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	fmtlog "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/log"
)

const origin = "example.com/kt"

func newKey(t testing.TB, name string) (string, note.Signer, note.Verifier) {
	t.Helper()
	skey, _, s, v := testkit.NoteKey(t, name)
	return skey, s, v
}

func root(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func TestSignParseRoundTrip(t *testing.T) {
	_, s, v := newKey(t, origin)
	for _, size := range []uint64{0, 1, 2, 1000, 1<<63 + 5, 1<<64 - 1} {
		raw, err := log.SignCheckpoint(s, origin, size, root("x"))
		if err != nil {
			t.Fatal(err)
		}
		cp, n, err := log.ParseCheckpoint(raw, origin, v)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if cp.Origin != origin || cp.Size != size || !bytes.Equal(cp.Hash, root("x")) {
			t.Errorf("parsed %+v", cp)
		}
		if len(n.Sigs) != 1 || n.Sigs[0].Name != origin {
			t.Errorf("signatures %+v", n.Sigs)
		}
		// The independent parser agrees.
		tree, err := tlog.ParseTree([]byte("go.sum database tree\n" + strings.SplitN(n.Text, "\n", 2)[1]))
		if size < 1<<63 && (err != nil || uint64(tree.N) != size || !bytes.Equal(tree.Hash[:], root("x"))) {
			t.Errorf("sumdb/tlog reads %+v, %v", tree, err)
		}
	}
}

func TestSignCheckpointRejectsBadRoot(t *testing.T) {
	_, s, _ := newKey(t, origin)
	for _, n := range []int{0, 31, 33, 64} {
		if _, err := log.SignCheckpoint(s, origin, 1, make([]byte, n)); err == nil {
			t.Errorf("%d-byte root signed", n)
		}
	}
}

// sign signs arbitrary note text.
func sign(t testing.TB, text string, signers ...note.Signer) []byte {
	t.Helper()
	b, err := note.Sign(&note.Note{Text: text}, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseCheckpointRejects(t *testing.T) {
	_, s, v := newKey(t, origin)
	_, impostor, _ := newKey(t, origin) // same name, another key
	_, witness, _ := newKey(t, "witness.example")
	good, err := log.SignCheckpoint(s, origin, 10, root("a"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(fmtlog.Checkpoint{Origin: origin, Size: 10, Hash: root("a")}.Marshal())
	// The signature lines, after the text and the blank line.
	sigLine := good[len(text)+1:]
	// b64 is the root line for b: base64 and a newline.
	b64 := func(b []byte) string { return string(fmtlog.Checkpoint{Hash: b}.Marshal()[len("\n0\n"):]) }

	tests := map[string][]byte{
		"empty":              nil,
		"garbage":            []byte("hello\n"),
		"text only":          []byte(text),
		"tampered size":      append([]byte(strings.Replace(text, "\n10\n", "\n11\n", 1)+"\n"), sigLine...),
		"tampered root":      append([]byte(strings.Replace(text, b64(root("a")), b64(root("b")), 1)+"\n"), sigLine...),
		"tampered origin":    append([]byte(strings.Replace(text, origin, "example.com/ku", 1)+"\n"), sigLine...),
		"tampered signature": func() []byte { b := bytes.Clone(good); b[len(b)-5] ^= 1; return b }(),
		"truncated":          good[:len(good)-10],
		"impostor key":       sign(t, text, impostor),
		"witness only":       sign(t, text, witness),
		"another origin":     sign(t, "example.com/other\n10\n"+strings.TrimSuffix(b64(root("a")), "\n")+"\n", s),
		// Well signed by the log, but not a C2SP tlog-checkpoint.
		"size with a leading zero": sign(t, origin+"\n010\n"+b64(root("a")), s),
		"negative size":            sign(t, origin+"\n-1\n"+b64(root("a")), s),
		"size with a sign":         sign(t, origin+"\n+10\n"+b64(root("a")), s),
		"size too large":           sign(t, origin+"\n18446744073709551616\n"+b64(root("a")), s),
		"empty root":               sign(t, origin+"\n10\n\n", s),
		"short root":               sign(t, origin+"\n10\nAAAA\n", s),
		"long root":                sign(t, origin+"\n10\n"+b64(append(root("a"), 0)), s),
		"root not base64":          sign(t, origin+"\n10\n!!!!\n", s),
		"root in unpadded base64":  sign(t, origin+"\n10\n"+strings.TrimRight(b64(root("a")), "=\n")+"\n", s),
		"missing root line":        sign(t, origin+"\n10\n", s),
	}
	for name, raw := range tests {
		t.Run(name, func(t *testing.T) {
			if cp, _, err := log.ParseCheckpoint(raw, origin, v); err == nil {
				t.Errorf("accepted: %+v", cp)
			}
		})
	}
	t.Run("wanted origin differs", func(t *testing.T) {
		if _, _, err := log.ParseCheckpoint(good, "example.com/other", v); err == nil {
			t.Error("accepted")
		}
	})
}

func TestParseCheckpointKeepsCosignatures(t *testing.T) {
	_, s, v := newKey(t, origin)
	_, witness, _ := newKey(t, "witness.example")
	text := string(fmtlog.Checkpoint{Origin: origin, Size: 3, Hash: root("c")}.Marshal())
	cp, n, err := log.ParseCheckpoint(sign(t, text, s, witness), origin, v)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != 3 || len(n.Sigs) != 1 || len(n.UnverifiedSigs) != 1 || n.UnverifiedSigs[0].Name != "witness.example" {
		t.Errorf("cp %+v, verified %+v, unverified %+v", cp, n.Sigs, n.UnverifiedSigs)
	}
}

func TestLoadOrCreateSigner(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "log.key")

	s1, v1, err := log.LoadOrCreateSigner(path, origin)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary file left behind: %v", err)
	}
	if s1.Name() != origin || v1.Name() != origin || s1.KeyHash() != v1.KeyHash() {
		t.Errorf("signer %s/%08x, verifier %s/%08x", s1.Name(), s1.KeyHash(), v1.Name(), v1.KeyHash())
	}

	// Reloading gives the same key: what one signs, the other verifies.
	s2, v2, err := log.LoadOrCreateSigner(path, origin)
	if err != nil {
		t.Fatal(err)
	}
	if s2.KeyHash() != s1.KeyHash() {
		t.Errorf("reloaded key hash %08x, want %08x", s2.KeyHash(), s1.KeyHash())
	}
	raw, err := log.SignCheckpoint(s1, origin, 1, root("r"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := log.ParseCheckpoint(raw, origin, v2); err != nil {
		t.Errorf("reloaded verifier rejects the first signer's checkpoint: %v", err)
	}
	raw, err = log.SignCheckpoint(s2, origin, 2, root("r"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := log.ParseCheckpoint(raw, origin, v1); err != nil {
		t.Errorf("first verifier rejects the reloaded signer's checkpoint: %v", err)
	}

	t.Run("another origin", func(t *testing.T) {
		if _, _, err := log.LoadOrCreateSigner(path, "example.com/other"); err == nil || !strings.Contains(err.Error(), "origin") {
			t.Errorf("err = %v, want an origin mismatch", err)
		}
	})
	_, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"empty":             "",
		"garbage":           "hello world\n",
		"verifier key":      vkey + "\n",
		"truncated key":     "PRIVATE+KEY+" + origin + "+0123abcd+AQID\n",
		"not base64":        "PRIVATE+KEY+" + origin + "+0123abcd+!!!!\n",
		"two keys":          "PRIVATE+KEY+a+1+AA\nPRIVATE+KEY+b+2+BB\n",
		"binary":            "\x00\x01\x02",
		"key for other alg": otherAlgKey(t),
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, _, err := log.LoadOrCreateSigner(p, origin); err == nil {
				t.Error("accepted")
			}
		})
	}
	t.Run("unreadable path", func(t *testing.T) {
		if _, _, err := log.LoadOrCreateSigner(dir, origin); err == nil {
			t.Error("a directory accepted as a key file")
		}
	})
}

// otherAlgKey returns a signer key whose algorithm byte is not Ed25519's.
func otherAlgKey(t *testing.T) string {
	skey, _, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(skey, "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || raw[0] != 1 {
		t.Fatalf("unexpected key encoding %q", skey)
	}
	raw[0] = 2
	parts[4] = base64.StdEncoding.EncodeToString(raw)
	return strings.Join(parts, "+")
}

func TestVerifierKey(t *testing.T) {
	for _, name := range []string{origin, "a", "witness.example/with/path"} {
		skey, vkey, err := note.GenerateKey(rand.Reader, name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := log.VerifierKey(skey)
		if err != nil {
			t.Fatal(err)
		}
		if got != vkey {
			t.Errorf("VerifierKey = %q, note.GenerateKey says %q", got, vkey)
		}
		got, err = log.VerifierKey(skey + "\n")
		if err != nil || got != vkey {
			t.Errorf("with a trailing newline: %q, %v", got, err)
		}
		v, err := log.VerifierFor(skey)
		if err != nil {
			t.Fatal(err)
		}
		s, err := note.NewSigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		msg := sign(t, "hello\n", s)
		if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
			t.Errorf("VerifierFor's verifier rejects the key's signature: %v", err)
		}
	}
	_, vkey, _ := note.GenerateKey(rand.Reader, origin)
	for _, bad := range []string{"", "PRIVATE+KEY", "PRIVATE+KEY+a+b", vkey, "PUBLIC+KEY+a+00000000+AQ==", "PRIVATE+KEY+a+00000000+!!"} {
		if _, err := log.VerifierKey(bad); err == nil {
			t.Errorf("VerifierKey(%q) accepted", bad)
		}
		if _, err := log.VerifierFor(bad); err == nil {
			t.Errorf("VerifierFor(%q) accepted", bad)
		}
	}
}

// FuzzParseCheckpoint feeds ParseCheckpoint both raw input (nearly always
// rejected: it must carry the log's signature) and arbitrary note text
// signed by the log key, which exercises the body parser. Whatever it
// accepts must re-verify, carry a 32-byte root, and be in the canonical
// C2SP tlog-checkpoint form.
func FuzzParseCheckpoint(f *testing.F) {
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		f.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	good := string(fmtlog.Checkpoint{Origin: origin, Size: 10, Hash: root("a")}.Marshal())
	for _, text := range []string{
		good,
		good + "extension\n",
		origin + "\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
		origin + "\n10\nAAAA\n",
		origin + "\n010\n" + good[len(origin)+4:],
		origin + "\n10\n",
		"\n\n\n",
	} {
		f.Add(false, []byte(text))
		f.Add(true, []byte(text))
	}
	f.Add(false, []byte(sign(f, good, s)))
	f.Fuzz(func(t *testing.T, signIt bool, in []byte) {
		raw := in
		if signIt {
			b, err := note.Sign(&note.Note{Text: string(in)}, s)
			if err != nil {
				return // not valid note text
			}
			raw = b
		}
		cp, n, err := log.ParseCheckpoint(raw, origin, v)
		if err != nil {
			return
		}
		if len(cp.Hash) != 32 {
			t.Fatalf("accepted a %d-byte root: %q", len(cp.Hash), n.Text)
		}
		if cp.Origin != origin {
			t.Fatalf("accepted origin %q", cp.Origin)
		}
		if !strings.HasPrefix(n.Text, string(cp.Marshal())) {
			t.Fatalf("accepted non-canonical text %q", n.Text)
		}
		if _, err := note.Open(raw, note.VerifierList(v)); err != nil {
			t.Fatalf("accepted, but does not re-verify: %v", err)
		}
		if _, _, _, err := fmtlog.ParseCheckpoint(raw, origin, v); err != nil {
			t.Fatalf("accepted, but formats rejects it: %v", err)
		}
	})
}

func BenchmarkVerifyCheckpoint(b *testing.B) {
	_, s, v := newKey(b, origin)
	_, w1, _ := newKey(b, "w1.example")
	_, w2, _ := newKey(b, "w2.example")
	text := string(fmtlog.Checkpoint{Origin: origin, Size: 10_000_000, Hash: root("b")}.Marshal())
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"log signature", sign(b, text, s)},
		{"log signature and 2 unknown cosignatures", sign(b, text, s, w1, w2)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := log.ParseCheckpoint(tc.raw, origin, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// The floor: one bare Ed25519 verification of a message that size, to
	// read the numbers above against on a loaded machine.
	b.Run("baseline ed25519.Verify", func(b *testing.B) {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		msg := []byte(text)
		sig := ed25519.Sign(priv, msg)
		for b.Loop() {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("bad signature")
			}
		}
	})
}
