package client

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/argon2"

	"github.com/keytrans/kt/api"
)

// ErrAccountExport reports an exported account key that is malformed, was
// exported for another log, or does not decrypt with the passphrase (a
// wrong passphrase and a modified export are not told apart).
var ErrAccountExport = errors.New("client: invalid account key export")

// AccountChange changes the device set of every own handle with edit, each
// change signed by the account key this device holds (kind 3, design.md
// 6.1 R5) rather than by this device, and each new set signed by that key
// too. It fails with [ErrNoAccountKey] when a handle's latest set names
// another account key (or none). The owner's monitors report these changes
// as [ByAccountKey].
//
// SPEC(design.md 13.2)
func (c *Client) AccountChange(ctx context.Context, edit func(*api.DeviceSet) error) ([]*Submitted, error) {
	return c.changeWith(ctx, changeOpts{byAccount: true}, edit)
}

// RotateAccountKey replaces the account key on every own handle by a new
// one, each change signed by the current account key (kind 3) and each new
// set by the new key. The new key is stored as pending before the change is
// sent, as [Client.SetAccountKey] does; the old key then no longer
// authorizes anything (R5 checks the latest set's authorizers).
//
// SPEC(design.md 13.2)
func (c *Client) RotateAccountKey(ctx context.Context) ([]*Submitted, error) {
	_, ak, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	return c.changeWith(ctx, changeOpts{byAccount: true, newAccount: ak}, func(*api.DeviceSet) error { return nil })
}

// RecoverWithAccountKey adds this device to each of handles with changes
// signed by the account key (kind 3), for an owner who holds the account
// key (imported with [Client.ImportAccountKey]) on a new device, for
// example after losing every other device. With replace, the new set holds
// this device alone (the others are removed); otherwise it is added to
// them. The device must be initialized ([Client.Init]) and each handle's
// latest set must name the account key this device holds. Once the
// directory accepts the changes the handles are this device's own,
// monitored from the version before the change, so the first
// [Client.Monitor] reports the recovery itself as [ByAccountKey].
//
// If the device was already added (a crash after the directory accepted
// the change), use [Client.Join] instead.
//
// SPEC(design.md 13.2)
func (c *Client) RecoverWithAccountKey(ctx context.Context, handles []string, replace bool) ([]*Submitted, error) {
	if len(handles) == 0 {
		return nil, ErrNoHandles
	}
	st, err := c.loadDevice(ctx)
	if err != nil {
		return nil, err
	}
	self := st.Device.Device()
	hs := make([]string, len(handles))
	for i, h := range handles {
		if hs[i], err = api.NormalizeHandle(h); err != nil {
			return nil, err
		}
	}
	return c.changeWith(ctx, changeOpts{byAccount: true, handles: hs}, func(set *api.DeviceSet) error {
		if slices.ContainsFunc(set.Devices, func(d api.Device) bool { return d.ID == self.ID || d.SigningKey == self.SigningKey }) {
			return fmt.Errorf("%w: this device is already in the set (use Join)", ErrDeviceSet)
		}
		if replace {
			set.Devices = nil
		}
		set.Devices = append(set.Devices, self)
		return nil
	})
}

// adoptHandles makes the verified states ress own handles of s, monitored
// from there, with the keys of their sets taken as the owner's (handles
// already own keep their monitoring state).
//
// SPEC(design.md 13.1)
// SPEC(design.md 13.2)
func adoptHandles(s *State, ress []*LookupResult) {
	if s.Handles == nil {
		s.Handles = map[string]*MonitorState{}
	}
	for _, res := range ress {
		ms := &MonitorState{
			Index:       res.Index,
			Version:     res.Version,
			LeafHash:    res.LeafHash,
			Authorizers: slices.Clone(res.Record.Authorizers),
			DeviceSet:   res.DeviceSet,
		}
		for _, d := range res.DeviceSet.Devices {
			ms.learn(d.SigningKey)
		}
		if res.DeviceSet.Account != nil {
			ms.learn(res.DeviceSet.Account.Key)
		}
		s.Handles[res.Handle] = ms
		if s.Primary == "" {
			s.Primary = res.Handle
		}
	}
}

// The account key export (design.md 13.2):
//
//	"kt-account-key:" || base64url without padding of
//	  u8 version (1) || salt[16] || u32 argon2id time || u32 memory (KiB)
//	  || u8 threads || nonce[12] || AES-256-GCM ciphertext of the payload
//
//	payload = u8 version (1) || Ed25519 seed[32] || u16 len || origin
//	  || u32 log key hash || u16 count || count × (u16 len || canonical handle)
//
// The AES key is Argon2id(passphrase, salt, time, memory, threads, 32
// bytes) (RFC 9106); the additional data is everything before the nonce,
// so the parameters cannot be changed either.
const (
	accountExportPrefix  = "kt-account-key:"
	accountExportVersion = 1
	accountExportHead    = 1 + 16 + 4 + 4 + 1
	// RFC 9106 section 4, second recommended option: t=3, 64 MiB, p=4.
	argonTime    = 3
	argonMemory  = 64 << 10
	argonThreads = 4
	// Bounds on what an import will compute, against a hostile export.
	maxArgonTime     = 16
	maxArgonMemory   = 1 << 20 // 1 GiB
	maxAccountExport = 64 << 10
)

// ExportAccountKey returns this device's account key, the log's origin and
// the own handles, encrypted under passphrase, for [Client.ImportAccountKey]
// on another of the owner's devices. The result is a secret: anyone with it
// and the passphrase controls the account (design.md 13.2).
//
// SPEC(design.md 13.2)
func (c *Client) ExportAccountKey(ctx context.Context, passphrase []byte) (string, error) {
	if len(passphrase) == 0 {
		return "", fmt.Errorf("%w: empty passphrase", ErrAccountExport)
	}
	st, err := c.State(ctx)
	if err != nil {
		return "", err
	}
	if st.Account == nil {
		return "", ErrNoAccountKey
	}
	pt := []byte{accountExportVersion}
	pt = append(pt, st.Account.Seed()...)
	pt = binary.BigEndian.AppendUint16(pt, uint16(len(c.params().Origin)))
	pt = append(pt, c.params().Origin...)
	pt = binary.BigEndian.AppendUint32(pt, c.params().LogVerifier.KeyHash())
	hs := st.sortedHandles()
	pt = binary.BigEndian.AppendUint16(pt, uint16(len(hs)))
	for _, h := range hs {
		pt = binary.BigEndian.AppendUint16(pt, uint16(len(h)))
		pt = append(pt, h...)
	}
	return sealAccountExport(pt, passphrase, argonTime, argonMemory, argonThreads), nil
}

// sealAccountExport encrypts an export payload with the given Argon2id
// parameters.
//
// SPEC(design.md 13.2)
func sealAccountExport(pt, passphrase []byte, t, m uint32, p uint8) string {
	head := []byte{accountExportVersion}
	salt := make([]byte, 16)
	rand.Read(salt)
	head = append(head, salt...)
	head = binary.BigEndian.AppendUint32(head, t)
	head = binary.BigEndian.AppendUint32(head, m)
	head = append(head, p)
	aead := exportAEAD(passphrase, salt, t, m, p)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	out := append(append(head, nonce...), aead.Seal(nil, nonce, pt, head)...)
	return accountExportPrefix + base64.RawURLEncoding.EncodeToString(out)
}

// SPEC(design.md 13.2)
func exportAEAD(passphrase, salt []byte, t, m uint32, p uint8) cipher.AEAD {
	key := argon2.IDKey(passphrase, salt, t, m, p, 32)
	b, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(b)
	return aead
}

// ImportAccountKey decrypts an [Client.ExportAccountKey] export with
// passphrase and stores the account key on this device; it returns the
// handles the export lists (for [Client.RecoverWithAccountKey] on a new
// device). It fails with [ErrAccountExport] when the export is malformed,
// for another log or does not decrypt, and with [ErrNoAccountKey] when this
// device already holds a different account key. Nothing is stored on
// failure.
//
// SPEC(design.md 13.2)
func (c *Client) ImportAccountKey(ctx context.Context, export string, passphrase []byte) ([]string, error) {
	key, origin, keyHash, handles, err := openAccountExport(export, passphrase)
	if err != nil {
		return nil, err
	}
	if origin != c.params().Origin || keyHash != c.params().LogVerifier.KeyHash() {
		return nil, fmt.Errorf("%w: exported for the log %q (key hash %08x), not this one", ErrAccountExport, origin, keyHash)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err = c.update(ctx, func(s *State) error {
		if s.Account != nil && !s.Account.Equal(key) {
			return fmt.Errorf("%w: this device already holds another account key", ErrNoAccountKey)
		}
		s.Account = key
		return nil
	})
	if err != nil {
		return nil, err
	}
	return handles, nil
}

// openAccountExport decodes and decrypts an export strictly.
//
// SPEC(design.md 13.2)
func openAccountExport(export string, passphrase []byte) (key ed25519.PrivateKey, origin string, keyHash uint32, handles []string, err error) {
	bad := func(format string, args ...any) (ed25519.PrivateKey, string, uint32, []string, error) {
		return nil, "", 0, nil, fmt.Errorf("%w: %s", ErrAccountExport, fmt.Sprintf(format, args...))
	}
	if len(export) > maxAccountExport {
		return bad("%d bytes", len(export))
	}
	enc, ok := strings.CutPrefix(strings.TrimSpace(export), accountExportPrefix)
	if !ok {
		return bad("does not start with %q", accountExportPrefix)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(enc)
	if err != nil {
		return bad("not base64url: %v", err)
	}
	if len(raw) < accountExportHead+12+16 || raw[0] != accountExportVersion {
		return bad("truncated or of an unknown version")
	}
	head := raw[:accountExportHead]
	salt := head[1:17]
	t := binary.BigEndian.Uint32(head[17:])
	m := binary.BigEndian.Uint32(head[21:])
	p := head[25]
	if t == 0 || t > maxArgonTime || m < 8*uint32(p) || m > maxArgonMemory || p == 0 {
		return bad("argon2id parameters t=%d m=%d p=%d out of bounds", t, m, p)
	}
	aead := exportAEAD(passphrase, salt, t, m, p)
	nonce := raw[accountExportHead : accountExportHead+aead.NonceSize()]
	pt, err := aead.Open(nil, nonce, raw[accountExportHead+aead.NonceSize():], head)
	if err != nil {
		return bad("wrong passphrase or modified export")
	}
	// The payload was written by ExportAccountKey (it authenticated), but
	// parse it strictly anyway.
	if len(pt) < 1+ed25519.SeedSize+2 || pt[0] != accountExportVersion {
		return bad("payload of an unknown version")
	}
	key = ed25519.NewKeyFromSeed(pt[1 : 1+ed25519.SeedSize])
	rest := pt[1+ed25519.SeedSize:]
	str := func() (string, bool) {
		if len(rest) < 2 || len(rest)-2 < int(binary.BigEndian.Uint16(rest)) {
			return "", false
		}
		n := int(binary.BigEndian.Uint16(rest))
		v := string(rest[2 : 2+n])
		rest = rest[2+n:]
		return v, true
	}
	origin, ok = str()
	if !ok || origin == "" || len(rest) < 4+2 {
		return bad("truncated payload")
	}
	keyHash = binary.BigEndian.Uint32(rest)
	n := int(binary.BigEndian.Uint16(rest[4:]))
	rest = rest[6:]
	for range n {
		h, ok := str()
		if !ok {
			return bad("truncated payload")
		}
		if c, err := api.NormalizeHandle(h); err != nil || c != h {
			return bad("%q is not a canonical handle", h)
		}
		handles = append(handles, h)
	}
	if len(rest) != 0 {
		return bad("trailing bytes in the payload")
	}
	return key, origin, keyHash, handles, nil
}
