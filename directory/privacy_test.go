package directory

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
