package main

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestLoadOrCreateConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "vrf.key")
	const n = 8
	keys := make([]string, n)
	errs := make([]error, n)
	created := make([]bool, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k, c, err := loadVRFKey(path)
			errs[i], created[i] = err, c
			if err == nil {
				keys[i] = k.Public().String()
			}
		})
	}
	wg.Wait()
	nCreated := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("load %d: %v", i, errs[i])
		}
		if keys[i] != keys[0] {
			t.Errorf("load %d got key %s, load 0 got %s", i, keys[i], keys[0])
		}
		if created[i] {
			nCreated++
		}
	}
	if nCreated != 1 {
		t.Errorf("%d loads created the key, want exactly 1", nCreated)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	// Loading again returns the same key and creates nothing.
	k, c, err := loadVRFKey(path)
	if err != nil || c || k.Public().String() != keys[0] {
		t.Errorf("reload: %v created=%v %v", k, c, err)
	}
}

func TestRecoveryKeyForms(t *testing.T) {
	dir := t.TempDir()
	priv := filepath.Join(dir, "recovery.key")
	pub1, private, created, err := loadRecoveryKey(priv)
	if err != nil || !private || !created {
		t.Fatalf("create: private=%v created=%v %v", private, created, err)
	}
	// The public form of the same key yields the same public key.
	pubFile := filepath.Join(dir, "recovery.pub")
	if err := os.WriteFile(pubFile, []byte(recoveryPublicPrefix+b64.EncodeToString(pub1)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pub2, private, created, err := loadRecoveryKey(pubFile)
	if err != nil || private || created || !bytes.Equal(pub1, pub2) {
		t.Fatalf("public form: %x private=%v created=%v %v, want %x", pub2, private, created, err, pub1)
	}

	for name, content := range map[string]string{
		"no prefix":       b64.EncodeToString(make([]byte, 32)),
		"short public":    recoveryPublicPrefix + b64.EncodeToString(make([]byte, 31)),
		"short seed":      recoveryPrivatePrefix + b64.EncodeToString(make([]byte, 31)),
		"not base64":      recoveryPublicPrefix + "!!!",
		"a VRF key":       "kt-vrf-private:" + b64.EncodeToString(make([]byte, 32)),
		"empty":           "",
		"non-canonical64": recoveryPublicPrefix + strings.TrimSuffix(b64.EncodeToString(make([]byte, ed25519.PublicKeySize)), "=") + "B=",
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, _, _, err := loadRecoveryKey(p); err == nil {
				t.Error("malformed recovery key accepted")
			}
		})
	}
}

func TestTokenKeyMalformed(t *testing.T) {
	p := filepath.Join(t.TempDir(), "enroll-token.key")
	if err := os.WriteFile(p, []byte(tokenKeyPrefix+b64.EncodeToString(make([]byte, 16))), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadTokenKey(p); err == nil {
		t.Error("16-byte token key accepted")
	}
}
