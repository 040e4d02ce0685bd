package client_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/client"
)

// verifiedState is a state with two verification pins (design.md 13.5),
// one of each identity kind.
func verifiedState(t *testing.T) *client.State {
	st := testState(t)
	acct, dev := api.Identity{api.IdentityAccountKey, 1, 2, 3}, api.Identity{api.IdentityDeviceSet, 4, 5, 6}
	st.Verified = map[string]*client.VerifiedPin{
		"mailto:b@example.com": {Identity: acct, Own: "mailto:a@example.com", Time: time.Unix(1767225600, 0).UTC()},
		"tel:+14155550100":     {Identity: dev, Time: time.Unix(1767225601, 0).UTC()},
	}
	return st
}

// TestVerifiedPinsRoundTrip: the pins survive the state encoding, byte
// for byte, and decode to what was stored; the encoding is pinned by a
// golden file.
func TestVerifiedPinsRoundTrip(t *testing.T) {
	st := verifiedState(t)
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got client.State
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(st.Verified, got.Verified); diff != "" {
		t.Fatalf("pins changed (-stored +read):\n%s", diff)
	}
	if b2, err := got.MarshalBinary(); err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("round trip differs: %v", err)
	}

	golden := &client.State{Trusted: goldenTrusted(t), Verified: st.Verified}
	enc := hex.EncodeToString(mustMarshal(t, golden)) + "\n"
	path := filepath.Join("testdata", "client-state-verified.golden")
	if *update {
		if err := os.WriteFile(path, []byte(enc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if enc != string(want) {
		t.Errorf("encoding changed (run with -update if intended):\n got %s\nwant %s", enc, want)
	}
}

// TestVerifiedPinsCorrupt: a damaged pin is an error wrapping ErrState,
// never a silently dropped pin.
func TestVerifiedPinsCorrupt(t *testing.T) {
	good, err := verifiedState(t).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	acct := []byte(`"AQECAwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"`)
	if !bytes.Contains(good, acct) {
		t.Fatalf("the test's identity is not in the encoding:\n%s", good)
	}
	for name, b := range map[string][]byte{
		"short identity":   bytes.Replace(good, acct, []byte(`"AQECAw=="`), 1),
		"unknown kind":     bytes.Replace(good, acct, []byte(`"AwECAwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"`), 1),
		"no identity":      bytes.Replace(good, acct, []byte(`null`), 1),
		"non-canonical":    bytes.Replace(good, []byte(`"mailto:b@example.com": {`), []byte(`"B@example.com": {`), 1),
		"own = contact":    bytes.Replace(good, []byte(`"own": "mailto:a@example.com"`), []byte(`"own": "mailto:b@example.com"`), 1),
		"own not a handle": bytes.Replace(good, []byte(`"own": "mailto:a@example.com"`), []byte(`"own": "a"`), 1),
		"unknown field":    bytes.Replace(good, []byte(`"own": "mailto:a@example.com"`), []byte(`"own": "mailto:a@example.com", "x": 1`), 1),
		"bad time":         bytes.Replace(good, []byte(`"time": "2026-01-01T00:00:00Z"`), []byte(`"time": "yesterday"`), 1),
	} {
		if bytes.Equal(b, good) {
			t.Fatalf("%s: the replacement did not apply", name)
		}
		var s client.State
		if err := s.UnmarshalBinary(b); !errors.Is(err, client.ErrState) {
			t.Errorf("%s: %v, want ErrState", name, err)
		}
	}
}
