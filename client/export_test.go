package client

import (
	"context"
	"crypto/ed25519"

	"github.com/keytrans/kt/api"
)

// SealForTest encrypts plaintext to device d as Encrypt does after
// verification.
func SealForTest(d api.Device, from, to, owner string, plaintext []byte) (*Envelope, error) {
	rs, err := recipients(&api.DeviceSet{Devices: []api.Device{d}})
	if err != nil {
		return nil, err
	}
	e := &Envelope{Version: EnvelopeV1, Suite: d.Suite, Device: d.ID, From: from, To: to, Owner: owner}
	return e, e.seal(&rs[0], plaintext)
}

// SealSignedForTest builds a format-2 envelope to device d as Encrypt does,
// with the given sender fields, signed by key for origin: the tests craft
// envelopes whose every part but one is valid.
func SealSignedForTest(d api.Device, from, to, owner string, sender [16]byte, ts uint64, id [16]byte, origin string, key ed25519.PrivateKey, plaintext []byte) (*Envelope, error) {
	rs, err := recipients(&api.DeviceSet{Devices: []api.Device{d}})
	if err != nil {
		return nil, err
	}
	e := &Envelope{Version: EnvelopeV2, Suite: d.Suite, Device: d.ID, From: from, To: to, Owner: owner,
		SenderDevice: sender, Timestamp: ts, MessageID: id}
	if err := e.seal(&rs[0], plaintext); err != nil {
		return nil, err
	}
	e.Sign(origin, key)
	return e, nil
}

// SealAccountExportForTest encrypts an account export payload with cheap
// Argon2id parameters, and OpenAccountExportForTest decrypts one, for the
// fuzz target.
func SealAccountExportForTest(pt, passphrase []byte) string {
	return sealAccountExport(pt, passphrase, 1, 64, 1)
}

func OpenAccountExportForTest(export string, passphrase []byte) (seed []byte, origin string, handles []string, err error) {
	k, o, _, hs, err := openAccountExport(export, passphrase)
	if err != nil {
		return nil, "", nil, err
	}
	return k.Seed(), o, hs, nil
}

// SealAccountExportDefaultForTest encrypts with the parameters
// ExportAccountKey uses, for the benchmark.
func SealAccountExportDefaultForTest(pt, passphrase []byte) string {
	return sealAccountExport(pt, passphrase, argonTime, argonMemory, argonThreads)
}

// UpdateStateForTest applies f to the stored state.
func (c *Client) UpdateStateForTest(ctx context.Context, f func(*State)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.update(ctx, func(s *State) error {
		if s.Seen == nil {
			s.Seen = &SeenMessages{}
		}
		f(s)
		return nil
	})
}
