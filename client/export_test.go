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
