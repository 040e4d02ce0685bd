package client_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
)

// mutate applies one mutation to one part of resp. op: data non-empty
// overwrites from pos with data (extending if needed); otherwise x = 0
// truncates at pos and x ≠ 0 XORs the byte at pos with x.
func mutate(resp, other *ktpb.LookupResponse, field uint8, pos uint16, x byte, data []byte) {
	edit := func(b []byte) []byte {
		b = bytes.Clone(b)
		p := int(pos)
		if len(b) > 0 {
			p %= len(b) + 1
		} else {
			p = 0
		}
		switch {
		case len(data) > 0:
			if end := p + len(data); end > len(b) {
				b = append(b, make([]byte, end-len(b))...)
			}
			copy(b[p:], data)
		case x == 0:
			b = b[:p]
		case p < len(b):
			b[p] ^= x
		default:
			b = append(b, x)
		}
		return b
	}
	ep := resp.Epoch
	switch field % 14 {
	case 0:
		resp.Handle = string(edit([]byte(resp.Handle)))
	case 1:
		resp.VrfProof = edit(resp.VrfProof)
	case 2:
		resp.MapProof = edit(resp.MapProof)
	case 3:
		resp.ChangeRecord = edit(resp.ChangeRecord)
	case 4:
		resp.Opening = edit(resp.Opening)
	case 5:
		resp.DeviceSet = edit(resp.DeviceSet)
	case 6:
		if ep != nil {
			ep.Checkpoint = edit(ep.Checkpoint)
		}
	case 7:
		if ep != nil {
			ep.EpochRecord = edit(ep.EpochRecord)
		}
	case 8:
		if ep != nil && len(ep.InclusionProof) > 0 {
			i := int(x) % len(ep.InclusionProof)
			ep.InclusionProof[i] = edit(ep.InclusionProof[i])
		}
	case 9:
		if ep != nil {
			ep.ConsistencyProof = append(ep.ConsistencyProof, bytes.Clone(data))
		}
	case 10:
		resp.Epoch = nil
	case 11:
		resp.ChangeRecord, resp.Opening, resp.DeviceSet = nil, nil, nil
	case 12:
		resp.ChangeRecord, resp.Opening, resp.DeviceSet = other.ChangeRecord, other.Opening, other.DeviceSet
	case 13:
		if ep != nil && len(ep.InclusionProof) > 0 {
			ep.InclusionProof = ep.InclusionProof[:int(x)%len(ep.InclusionProof)]
		}
	}
}

// FuzzVerifyLookup feeds mutations of an honest answer to VerifyLookup,
// with and without a trusted epoch. It must never panic, every failure must
// be a *VerifyError, and an accepted answer must carry exactly the logged
// device set.
func FuzzVerifyLookup(f *testing.F) {
	fx := newFixture(f)
	honest := fx.s.lookup(alice, 0)
	other := fx.s.lookup(bob, 0)
	tr := fx.trusted(f, fx.now)
	want := honest.DeviceSet
	for field := range uint8(14) {
		f.Add(field, uint16(0), byte(1), []byte(nil))
		f.Add(field|0x80, uint16(40), byte(0x80), []byte(nil))
		f.Add(field, uint16(100), byte(0), []byte(nil))
		f.Add(field, uint16(3), byte(0), []byte{0xff, 0xff})
	}
	f.Fuzz(func(t *testing.T, field uint8, pos uint16, x byte, data []byte) {
		resp := clone(honest)
		var trusted *client.Trusted
		if field&0x80 != 0 {
			trusted = tr
		}
		mutate(resp, other, field&0x7f, pos, x, data)
		res, err := client.VerifyLookup(fx.p, trusted, alice, resp, fx.now, nil)
		if err != nil {
			var ve *client.VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is not a *VerifyError", err)
			}
			return
		}
		if !res.Registered || res.DeviceSet == nil {
			t.Fatal("accepted the registered handle as absent")
		}
		if got := mustMarshal(t, res.DeviceSet); !bytes.Equal(got, want) {
			t.Fatalf("accepted a mutated device set")
		}
	})
}

// FuzzVerifyMonitor feeds mutations of an honest monitoring answer (three
// versions after the known one) to VerifyMonitor. It must never panic, and
// an accepted answer must report exactly the logged versions and sets.
func FuzzVerifyMonitor(f *testing.F) {
	fx := newFixture(f)
	st, tr := fx.poll0(f)
	fx.a3 = newDevice(f, "a3", api.SuiteX25519)
	fx.s.change(alice, set(fx.a1, fx.a2, fx.a3), api.AuthDevice, fx.a1.sign)
	fx.s.change(alice, set(fx.a1, fx.a3), api.AuthDevice, fx.a3.sign)
	fx.s.change(alice, set(fx.a1), api.AuthRecovery, fx.k.recovery)
	fx.next()
	honest := fx.s.monitor(alice, st.Version, tr.Size)
	logged := fx.s.handle(alice).versions[1:]
	for field := range uint8(12) {
		f.Add(field, uint8(0), uint16(0), byte(1), []byte(nil))
		f.Add(field, uint8(1), uint16(40), byte(0x80), []byte(nil))
		f.Add(field, uint8(2), uint16(100), byte(0), []byte(nil))
		f.Add(field, uint8(0), uint16(3), byte(0), []byte{0xff, 0xff})
	}
	f.Fuzz(func(t *testing.T, field, which uint8, pos uint16, x byte, data []byte) {
		resp := clone(honest)
		edit := func(b []byte) []byte {
			l := &ktpb.LookupResponse{MapProof: b}
			mutate(l, l, 2, pos, x, data)
			return l.MapProof
		}
		c := resp.Changes[int(which)%len(resp.Changes)]
		switch field % 12 {
		case 0:
			resp.MapProof = edit(resp.MapProof)
		case 1:
			c.ChangeRecord = edit(c.ChangeRecord)
		case 2:
			c.Opening = edit(c.Opening)
		case 3:
			c.DeviceSet = edit(c.DeviceSet)
		case 4:
			c.LogIndex ^= uint64(x)
		case 5:
			if len(c.InclusionProof) > 0 {
				i := int(pos) % len(c.InclusionProof)
				c.InclusionProof[i] = edit(c.InclusionProof[i])
			}
		case 6:
			resp.Changes = append(resp.Changes[:int(which)%len(resp.Changes)], resp.Changes[int(which)%len(resp.Changes)+1:]...)
		case 7:
			j := int(pos) % len(resp.Changes)
			i := int(which) % len(resp.Changes)
			resp.Changes[i], resp.Changes[j] = resp.Changes[j], resp.Changes[i]
		case 8:
			resp.Epoch.Checkpoint = edit(resp.Epoch.Checkpoint)
		case 9:
			resp.Epoch.EpochRecord = edit(resp.Epoch.EpochRecord)
		case 10:
			resp.Changes = append(resp.Changes, clone(c))
		case 11:
			resp.Epoch = nil
		}
		res, err := client.VerifyMonitor(fx.p, tr, st, resp, fx.own(), fx.now)
		if err != nil {
			var ve *client.VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is not a *VerifyError", err)
			}
			return
		}
		if len(res.Changes) != len(logged) {
			t.Fatalf("accepted %d changes, %d were logged", len(res.Changes), len(logged))
		}
		for i, c := range res.Changes {
			if c.Version != logged[i].record.Version || !bytes.Equal(mustMarshal(t, c.DeviceSet), logged[i].set) {
				t.Fatalf("accepted a mutated version %d", c.Version)
			}
		}
		if got := res.Changes[len(res.Changes)-1]; got.By != client.ByRecovery || len(got.Alerts) == 0 {
			t.Fatal("the recovery change lost its alert")
		}
	})
}
