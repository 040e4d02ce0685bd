package client

import "github.com/keytrans/kt/api"

// SealForTest encrypts plaintext to device d as Encrypt does after
// verification.
func SealForTest(d api.Device, from, to, owner string, plaintext []byte) (*Envelope, error) {
	rs, err := recipients(&api.DeviceSet{Devices: []api.Device{d}})
	if err != nil {
		return nil, err
	}
	e := &Envelope{Suite: d.Suite, Device: d.ID, From: from, To: to, Owner: owner}
	return e, e.seal(&rs[0], plaintext)
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
