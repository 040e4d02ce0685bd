package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/log/evidence"
)

// Store persists a [Client]'s state. Implementations must make Update
// atomic and durable: when Update returns nil, the bytes f returned are on
// stable storage and a crash at any point leaves either the old or the new
// bytes, never a mixture. Updates are serialized (also across processes
// sharing one store, for [FileStore]).
type Store interface {
	// Load returns the stored state, or nil and no error when nothing was
	// ever stored.
	Load(ctx context.Context) ([]byte, error)
	// Update calls f with the stored state (nil when none) and stores what
	// f returns. If f fails, nothing is stored and Update returns f's error.
	Update(ctx context.Context, f func(old []byte) ([]byte, error)) error
}

// MemStore is a [Store] in memory, for tests and for clients that keep
// state elsewhere. The zero value is empty and ready.
type MemStore struct {
	mu sync.Mutex // guards b
	b  []byte
}

// Load implements [Store].
func (m *MemStore) Load(context.Context) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.b), nil
}

// Update implements [Store].
func (m *MemStore) Update(_ context.Context, f func([]byte) ([]byte, error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := f(bytes.Clone(m.b))
	if err != nil {
		return err
	}
	m.b = bytes.Clone(b)
	return nil
}

// FileStore is a [Store] in one file. Update takes an exclusive flock on
// Path+".lock" (so several processes may share the file), writes the new
// state to a temporary file in the same directory, fsyncs it, renames it
// over Path and fsyncs the directory. The file is created with mode 0600:
// it holds the device's private keys.
type FileStore struct {
	// Path is the state file. Its directory must exist.
	Path string
}

// Load implements [Store].
//
// SPEC(design.md 16)
func (s *FileStore) Load(context.Context) ([]byte, error) {
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("client: reading state: %w", err)
	}
	return b, nil
}

// Update implements [Store].
//
// SPEC(design.md 16)
func (s *FileStore) Update(ctx context.Context, f func([]byte) ([]byte, error)) error {
	lock, err := os.OpenFile(s.Path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("client: state lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("client: state lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if err := ctx.Err(); err != nil {
		return err
	}
	old, err := s.Load(ctx)
	if err != nil {
		return err
	}
	b, err := f(old)
	if err != nil {
		return err
	}
	return writeFileAtomic(s.Path, b)
}

// writeFileAtomic replaces path with b: temporary file, fsync, rename,
// directory fsync.
//
// SPEC(design.md 16)
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("client: writing state: %w", err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("client: writing state: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("client: writing state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("client: syncing state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("client: writing state: %w", err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("client: replacing state: %w", err)
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("client: syncing state directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("client: syncing state directory: %w", err)
	}
	return nil
}

// State is everything a [Client] persists (design.md 16): the trusted epoch
// checkpoint, this device's private keys, the account key if this device
// holds it, the owner's handles with their monitoring positions, the
// strict-mode pins of contacts' account keys, and the evidence against
// refused logs.
type State struct {
	// Trusted is the trusted epoch checkpoint and epoch; nil before the
	// first verified answer.
	Trusted *Trusted
	// Device is this device's keys; nil before [Client.Init].
	Device *DeviceKeys
	// Account is the account key's private key when this device holds it.
	Account ed25519.PrivateKey
	// Handles maps each of the owner's canonical handles to its
	// monitoring state.
	Handles map[string]*MonitorState
	// Primary is the handle the owner sends from; "" if none.
	Primary string
	// Pins maps a contact's canonical handle to the account key pinned for
	// it in strict mode.
	Pins map[string][32]byte
	// OwnDevices are the signing keys of the owner's other devices that this
	// device added itself; they count as the owner's when monitoring.
	OwnDevices [][32]byte
	// PendingDevice holds this device's new keys while a re-key is in
	// flight, and PendingAccount a new account key while it is being set:
	// written before the change is sent, promoted once the directory
	// accepted it (or once monitoring sees it logged), so that a crash in
	// between never loses the key the log ends up naming.
	PendingDevice  *DeviceKeys
	PendingAccount ed25519.PrivateKey
	// FormerKeys are this device's signing keys before its re-keys, so
	// that monitoring reports the changes they signed as this device's.
	FormerKeys [][32]byte
	// Refused maps a refused log, "origin+hhhhhhhh" (its origin and log
	// key hash), to the verified evidence against it ([ErrLogRefused]).
	Refused map[string]*Refusal
	// Contacts are the contacts this device encrypted to, by canonical
	// handle, as last verified (contact monitoring, design.md 13.3).
	Contacts map[string]*Contact
	// Rotations are the key rotation records the client verified and
	// follows (design.md 11.1), in log order.
	Rotations []Rotation
}

// stateVersion is the "version" of the persisted encoding.
const stateVersion = 1

// stateJSON is the persisted encoding of State: JSON with a version, binary
// parts in base64 (encoding/json's []byte).
type stateJSON struct {
	Version    int                    `json:"version"`
	Trusted    []byte                 `json:"trusted,omitempty"`
	Device     []byte                 `json:"device,omitempty"`
	Account    []byte                 `json:"account,omitempty"` // Ed25519 seed
	Handles    map[string][]byte      `json:"handles,omitempty"`
	Primary    string                 `json:"primary,omitempty"`
	Pins       map[string][]byte      `json:"pins,omitempty"`
	OwnDevices [][]byte               `json:"own_devices,omitempty"`
	PendingDev []byte                 `json:"pending_device,omitempty"`
	PendingAcc []byte                 `json:"pending_account,omitempty"`
	FormerKeys [][]byte               `json:"former_keys,omitempty"`
	Refused    map[string]refusalJSON `json:"refused,omitempty"`
	Contacts   map[string][]byte      `json:"contacts,omitempty"`
	Rotations  []rotationJSON         `json:"rotations,omitempty"`
}

// refusalJSON is the persisted encoding of a [Refusal].
type refusalJSON struct {
	Kind   string    `json:"kind"`
	ID     string    `json:"id"`
	What   string    `json:"what"`
	Bundle []byte    `json:"bundle"`
	Time   time.Time `json:"time"`
}

// MarshalBinary encodes s for a [Store].
//
// SPEC(design.md 16)
func (s *State) MarshalBinary() ([]byte, error) {
	j := stateJSON{Version: stateVersion, Primary: s.Primary}
	for _, r := range s.Rotations {
		j.Rotations = append(j.Rotations, rotationJSON{LogIndex: r.LogIndex, Record: r.Record})
	}
	var err error
	if s.Trusted != nil {
		if j.Trusted, err = s.Trusted.MarshalBinary(); err != nil {
			return nil, err
		}
	}
	if s.Device != nil {
		if j.Device, err = s.Device.MarshalBinary(); err != nil {
			return nil, err
		}
	}
	if s.Account != nil {
		j.Account = s.Account.Seed()
	}
	if len(s.Handles) > 0 {
		j.Handles = map[string][]byte{}
		for h, m := range s.Handles {
			if j.Handles[h], err = m.MarshalBinary(); err != nil {
				return nil, err
			}
		}
	}
	if len(s.Pins) > 0 {
		j.Pins = map[string][]byte{}
		for h, k := range s.Pins {
			j.Pins[h] = bytes.Clone(k[:])
		}
	}
	for _, k := range s.OwnDevices {
		j.OwnDevices = append(j.OwnDevices, bytes.Clone(k[:]))
	}
	if s.PendingDevice != nil {
		if j.PendingDev, err = s.PendingDevice.MarshalBinary(); err != nil {
			return nil, err
		}
	}
	if s.PendingAccount != nil {
		j.PendingAcc = s.PendingAccount.Seed()
	}
	for _, k := range s.FormerKeys {
		j.FormerKeys = append(j.FormerKeys, bytes.Clone(k[:]))
	}
	if len(s.Refused) > 0 {
		j.Refused = map[string]refusalJSON{}
		for k, r := range s.Refused {
			j.Refused[k] = refusalJSON{Kind: r.Kind, ID: r.ID, What: r.What, Bundle: r.Bundle, Time: r.Time}
		}
	}
	if len(s.Contacts) > 0 {
		j.Contacts = map[string][]byte{}
		for h, c := range s.Contacts {
			if j.Contacts[h], err = c.MarshalBinary(); err != nil {
				return nil, err
			}
		}
	}
	return json.MarshalIndent(j, "", "  ")
}

// UnmarshalBinary decodes what MarshalBinary wrote. Anything else, including
// an unknown version, unknown fields or a truncated file, is an error
// wrapping [ErrState]: corrupt state is never silently reset.
//
// SPEC(design.md 16)
func (s *State) UnmarshalBinary(b []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrState, fmt.Sprintf(format, args...))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var j stateJSON
	if err := dec.Decode(&j); err != nil {
		return bad("%v", err)
	}
	if dec.More() {
		return bad("trailing data")
	}
	if j.Version != stateVersion {
		return bad("unknown state version %d", j.Version)
	}
	out := State{Primary: j.Primary}
	for i, r := range j.Rotations {
		rec, err := api.ParseRotationRecord(r.Record)
		if err != nil {
			return bad("rotation %d: %v", i, err)
		}
		if i > 0 && r.LogIndex <= out.Rotations[i-1].LogIndex {
			return bad("rotations out of order")
		}
		out.Rotations = append(out.Rotations, Rotation{LogIndex: r.LogIndex, Record: bytes.Clone(r.Record), Parsed: rec})
	}
	if j.Trusted != nil {
		out.Trusted = new(Trusted)
		if err := out.Trusted.UnmarshalBinary(j.Trusted); err != nil {
			return err
		}
	}
	if j.Device != nil {
		out.Device = new(DeviceKeys)
		if err := out.Device.UnmarshalBinary(j.Device); err != nil {
			return err
		}
	}
	if j.Account != nil {
		if len(j.Account) != ed25519.SeedSize {
			return bad("account key of %d bytes", len(j.Account))
		}
		out.Account = ed25519.NewKeyFromSeed(j.Account)
	}
	if j.PendingDev != nil {
		out.PendingDevice = new(DeviceKeys)
		if err := out.PendingDevice.UnmarshalBinary(j.PendingDev); err != nil {
			return err
		}
	}
	if j.PendingAcc != nil {
		if len(j.PendingAcc) != ed25519.SeedSize {
			return bad("pending account key of %d bytes", len(j.PendingAcc))
		}
		out.PendingAccount = ed25519.NewKeyFromSeed(j.PendingAcc)
	}
	for h, m := range j.Handles {
		if c, err := api.NormalizeHandle(h); err != nil || c != h {
			return bad("handle %q is not canonical", h)
		}
		ms := new(MonitorState)
		if err := ms.UnmarshalBinary(m); err != nil {
			return err
		}
		if out.Handles == nil {
			out.Handles = map[string]*MonitorState{}
		}
		out.Handles[h] = ms
	}
	if out.Primary != "" && out.Handles[out.Primary] == nil {
		return bad("primary handle %q is not an own handle", out.Primary)
	}
	for h, k := range j.Pins {
		if len(k) != 32 {
			return bad("pin for %q has %d bytes", h, len(k))
		}
		if out.Pins == nil {
			out.Pins = map[string][32]byte{}
		}
		out.Pins[h] = [32]byte(k)
	}
	for _, k := range j.OwnDevices {
		if len(k) != 32 {
			return bad("own device key of %d bytes", len(k))
		}
		out.OwnDevices = append(out.OwnDevices, [32]byte(k))
	}
	for _, k := range j.FormerKeys {
		if len(k) != 32 {
			return bad("former key of %d bytes", len(k))
		}
		out.FormerKeys = append(out.FormerKeys, [32]byte(k))
	}
	for k, r := range j.Refused {
		// SPEC(design.md 12.2): the refusal is durable; a damaged one is
		// an error, never a silent return to trusting the log.
		if k == "" || r.Kind == "" || len(r.Bundle) == 0 || r.ID != evidence.ID(r.Bundle) {
			return bad("refusal of %q is incomplete or its id does not match its bundle", k)
		}
		if out.Refused == nil {
			out.Refused = map[string]*Refusal{}
		}
		out.Refused[k] = &Refusal{Kind: r.Kind, ID: r.ID, What: r.What, Bundle: r.Bundle, Time: r.Time}
	}
	for h, b := range j.Contacts {
		if c, err := api.NormalizeHandle(h); err != nil || c != h {
			return bad("contact %q is not canonical", h)
		}
		c := new(Contact)
		if err := c.UnmarshalBinary(b); err != nil {
			return err
		}
		if out.Contacts == nil {
			out.Contacts = map[string]*Contact{}
		}
		out.Contacts[h] = c
	}
	*s = out
	return nil
}

// clone returns a copy of s that shares no mutable maps or slices with it
// (the values inside are replaced, never modified, by the client).
func (s *State) clone() *State {
	c := *s
	c.Handles = maps.Clone(s.Handles)
	c.Pins = maps.Clone(s.Pins)
	c.OwnDevices = slices.Clone(s.OwnDevices)
	c.FormerKeys = slices.Clone(s.FormerKeys)
	c.Refused = maps.Clone(s.Refused)
	c.Contacts = maps.Clone(s.Contacts)
	return &c
}

// sortedHandles returns the own handles in order.
func (s *State) sortedHandles() []string {
	return slices.Sorted(maps.Keys(s.Handles))
}
