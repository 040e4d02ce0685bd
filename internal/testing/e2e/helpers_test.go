package e2e

import (
	"crypto/ed25519"
	"slices"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
)

// handleState is what the owner's client tracks about its handle: its
// canonical form, VRF index (learned from a verified lookup), and the
// latest accepted version and leaf hash.
type handleState struct {
	origin  string
	handle  string
	index   [32]byte
	version uint64
	leaf    [32]byte
}

// change builds a change of h to set, signed by signer.
func (h *handleState) change(kind api.AuthKind, signer ed25519.PrivateKey, set *api.DeviceSet) *ktpb.HandleChange {
	latest := &client.LookupResult{Handle: h.handle, Index: h.index, Version: h.version, LeafHash: h.leaf}
	hc, err := client.NewChange(h.origin, latest, set, kind, signer)
	if err != nil {
		panic(err)
	}
	return hc
}

// accepted records that hc was logged.
func (h *handleState) accepted(hc *ktpb.HandleChange) {
	h.version++
	h.leaf = api.LeafHash(hc.ChangeRecord)
}

// signed sets req's owner authorization (design.md 13.4), signed now by
// key, a current device or account key of the index.
func signed(origin string, req *ktpb.MonitorRequest, key ed25519.PrivateKey) *ktpb.MonitorRequest {
	ts := uint64(time.Now().UnixMilli())
	signer, sig := api.SignMonitor(origin, key, [32]byte(req.Index), req.KnownVersion, req.KnownSize, ts)
	req.Auth = &ktpb.MonitorAuth{Signer: signer[:], TimestampMs: ts, Signature: sig[:]}
	return req
}

// signingKeys returns the sorted signing keys of a set's devices.
func signingKeys(s *api.DeviceSet) [][32]byte {
	var out [][32]byte
	for _, d := range s.Devices {
		out = append(out, d.SigningKey)
	}
	slices.SortFunc(out, func(a, b [32]byte) int { return slices.Compare(a[:], b[:]) })
	return out
}
