package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
)

// Config holds a [Client]'s optional settings. The zero value is valid.
type Config struct {
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// MaxAge, when non-zero, overrides Params.MaxAge: the oldest epoch
	// (and witness quorum) a lookup or monitoring poll accepts.
	MaxAge time.Duration
	// MaxAuditLag, when non-zero, overrides Params.MaxAuditLag: in audit
	// mode, the oldest epoch a lookup or monitoring poll accepts
	// ([ErrAuditLag]).
	MaxAuditLag time.Duration
	// Strict turns on strict mode for every contact (design.md 12.2 step
	// 7): a contact's device set must be signed by its account key, which
	// is pinned on first use; a later set under another account key fails
	// with [ErrStrict] (an [*AccountKeyChangedError]) until the caller
	// accepts the new key with [Client.Repin].
	Strict bool
	// Log is the directory's Log service, used to check gossiped
	// checkpoints for consistency (design.md 15). Required for Gossip.
	Log ktpb.LogClient
	// Auditors are the base URLs of the auditors to gossip with
	// ("https://auditor.example"); [Client.Gossip] posts to
	// URL + "/kt/v1/gossip".
	Auditors []string
	// GossipOnLookup makes every verification that accepts a new trusted
	// checkpoint (a lookup, including those inside Encrypt and the
	// account changes) gossip it with Auditors before it is stored: a
	// split view fails the lookup with the [*SplitViewError], the new
	// checkpoint is not stored, and nothing is encrypted. Auditors that
	// fail without a conflict are logged only. Off by default: it adds a
	// round trip to each auditor whenever the epoch changed.
	GossipOnLookup bool
	// HTTPClient makes the gossip requests. Default: a client with a 10 s
	// timeout.
	HTTPClient *http.Client
	// Logger receives debug and warning messages. Default: discard.
	Logger *slog.Logger
	// MessageWindow is how old a received envelope may be, by its signed
	// time (design.md 12.3). Default [DefaultMessageWindow] (24 h).
	MessageWindow time.Duration
	// Replay, if set, keeps the replay cache of received message IDs
	// (design.md 12.3) apart from the state, in its binary form: Decrypt
	// then reads and writes that small record instead of decoding and
	// re-encoding the whole state with up to 4096 IDs in it. A replay
	// cache found in the state seeds an empty Replay store. Nil keeps the
	// cache in the state.
	Replay Store
}

// Client is the network client of the directory: it fetches answers over
// the Directory service, verifies them with the verification core
// ([VerifyLookup], [VerifyMonitor]), and persists the resulting trusted
// state in its [Store] before returning anything. It encrypts only to
// verified keys and signs this device's changes.
//
// A Client is safe for concurrent use; its operations are serialized by a
// mutex, and state changes are compare-and-swap updates of the store, so
// several processes may share one [FileStore].
type Client struct {
	dir ktpb.DirectoryClient
	// pinned are the parameters given to New; eff are them with the key
	// rotations the client accepted applied (rotation.go), which every
	// verification uses.
	pinned *Params
	eff    atomic.Pointer[effParams]
	store  Store
	cfg    Config
	log    *slog.Logger

	mu sync.Mutex // serializes the operations of this Client

	senders senderCache // guarded by mu (message.go)
	hint    hintMemo    // guarded by mu (rotation.go)
}

// New returns a client of the directory reached through dir (a gRPC
// connection the caller owns), with the pinned parameters p and durable
// state in store.
func New(dir ktpb.DirectoryClient, p *Params, store Store, cfg Config) (*Client, error) {
	if dir == nil || store == nil {
		return nil, fail(StepParams, ErrInvalidParams, nil, "no directory client or store")
	}
	pc := *p
	if cfg.MaxAge != 0 {
		pc.MaxAge = cfg.MaxAge
	}
	if cfg.MaxAuditLag != 0 {
		pc.MaxAuditLag = cfg.MaxAuditLag
	}
	if err := pc.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Client{dir: dir, pinned: &pc, store: store, cfg: cfg, log: lg}
	c.eff.Store(&effParams{p: &pc})
	return c, nil
}

// Params returns the client's parameters: the pinned ones with the key
// rotations it accepted applied (design.md 11.1).
func (c *Client) Params() *Params { return c.params() }

// State returns a copy of the client's persisted state.
func (c *Client) State(ctx context.Context) (*State, error) {
	return c.load(ctx)
}

// loadDevice loads the state of a device that has keys: it fails with
// [ErrNoDevice] before [Client.Init].
func (c *Client) loadDevice(ctx context.Context) (*State, error) {
	st, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	if st.Device == nil {
		return nil, ErrNoDevice
	}
	return st, nil
}

func (c *Client) load(ctx context.Context) (*State, error) {
	st, _, err := c.loadRaw(ctx)
	return st, err
}

// loadRaw is load that also returns the stored bytes the state was decoded
// from (nil for no state), for updateFrom.
func (c *Client) loadRaw(ctx context.Context) (*State, []byte, error) {
	b, err := c.store.Load(ctx)
	if err != nil {
		return nil, nil, err
	}
	st := &State{}
	if b == nil {
		return st, nil, nil
	}
	if err := st.UnmarshalBinary(b); err != nil {
		return nil, nil, err
	}
	if err := c.applyRotations(st.Rotations); err != nil {
		return nil, nil, err
	}
	return st, b, nil
}

// errStateMoved: another writer changed the trusted state between this
// operation's read and its write; the operation is retried.
var errStateMoved = errors.New("client: trusted state changed concurrently")

// commit applies mutate to the stored state, provided its trusted
// checkpoint is still base (the one the operation verified against).
//
// SPEC(design.md 12.2)
// SPEC(design.md 16)
func (c *Client) commit(ctx context.Context, base *Trusted, mutate func(*State) error) error {
	return c.store.Update(ctx, func(old []byte) ([]byte, error) {
		cur := &State{}
		if old != nil {
			if err := cur.UnmarshalBinary(old); err != nil {
				return nil, err
			}
		}
		if !sameTrusted(cur.Trusted, base) {
			return nil, errStateMoved
		}
		// SPEC(design.md 12.2): evidence stored meanwhile (by gossip in
		// another process) stops this answer from being trusted too.
		if err := cur.refused(c.params()); err != nil {
			return nil, err
		}
		if err := mutate(cur); err != nil {
			return nil, err
		}
		return cur.MarshalBinary()
	})
}

// update applies mutate to the stored state unconditionally.
func (c *Client) update(ctx context.Context, mutate func(*State) error) error {
	return c.store.Update(ctx, func(old []byte) ([]byte, error) {
		cur := &State{}
		if old != nil {
			if err := cur.UnmarshalBinary(old); err != nil {
				return nil, err
			}
		}
		if err := mutate(cur); err != nil {
			return nil, err
		}
		return cur.MarshalBinary()
	})
}

// updateFrom is update for an operation that already decoded the state
// (base, from the stored bytes raw) and whose mutate only replaces
// top-level fields of the State it is given: when the store still holds
// raw, mutate gets a shallow copy of base instead of a second decoding.
func (c *Client) updateFrom(ctx context.Context, base *State, raw []byte, mutate func(*State) error) error {
	return c.store.Update(ctx, func(old []byte) ([]byte, error) {
		cur := &State{}
		switch {
		case raw != nil && bytes.Equal(old, raw):
			cp := *base
			cur = &cp
		case old != nil:
			if err := cur.UnmarshalBinary(old); err != nil {
				return nil, err
			}
		}
		if err := mutate(cur); err != nil {
			return nil, err
		}
		return cur.MarshalBinary()
	})
}

func sameTrusted(a, b *Trusted) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return bytes.Equal(a.Checkpoint, b.Checkpoint) && a.Epoch == b.Epoch
}

// retry runs op again when the trusted state moved under it.
func retry[T any](op func() (T, error)) (T, error) {
	for i := 0; ; i++ {
		v, err := op()
		if errors.Is(err, errStateMoved) && i < 4 {
			continue
		}
		return v, err
	}
}

func knownSize(t *Trusted) uint64 {
	if t == nil {
		return 0
	}
	return t.Size
}

// AccountKeyChangedError reports, in strict mode, that a contact's device
// set is validly signed by an account key other than the pinned one. It
// wraps [ErrStrict]. Nothing is encrypted; call [Client.Repin] once the
// user has confirmed the change.
type AccountKeyChangedError struct {
	Handle      string
	Pinned, New [32]byte
}

func (e *AccountKeyChangedError) Error() string {
	return fmt.Sprintf("%v: %s changed its account key from %x to %x", ErrStrict, e.Handle, e.Pinned[:8], e.New[:8])
}

// Unwrap returns [ErrStrict].
func (e *AccountKeyChangedError) Unwrap() error { return ErrStrict }

// Lookup looks handle up with the client's trusted checkpoint size,
// verifies the answer (design.md 12.2), and stores the new trusted state
// (and, in strict mode, a first-use pin) before returning. A verification
// failure is a [*VerifyError]; nothing is stored then. Transport errors are
// returned wrapped. A contact remembered by [Client.Encrypt] is checked
// against what was remembered (design.md 13.3, see [Client.CheckContacts]):
// an alert is a [*ContactChangedError] or an error wrapping
// [ErrContactChain], and nothing is stored then either.
func (c *Client) Lookup(ctx context.Context, handle string) (*LookupResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return withRotations(ctx, c, func() (*LookupResult, error) { return c.lookup(ctx, handle) })
}

func (c *Client) lookup(ctx context.Context, handle string) (*LookupResult, error) {
	return c.lookupAs(ctx, handle, false)
}

// lookupAs is a verified lookup of handle. A remembered contact is checked
// (design.md 13.3); with remember (Encrypt's recipient) a contact that is
// not one of the owner's handles is remembered. The contact's entry is
// stored in the write that stores the trusted state.
//
// SPEC(design.md 12.2)
// SPEC(design.md 12.2 step 7)
func (c *Client) lookupAs(ctx context.Context, handle string, remember bool) (*LookupResult, error) {
	canon, err := api.NormalizeHandle(handle)
	if err != nil {
		return nil, &VerifyError{Step: StepHandle, Err: err}
	}
	st, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	// SPEC(design.md 12.2): refused logs are not asked.
	if err := st.refused(c.params()); err != nil {
		return nil, err
	}
	resp, err := c.dir.Lookup(ctx, &ktpb.LookupRequest{Handle: canon, KnownSize: knownSize(st.Trusted)})
	if err != nil {
		return nil, fmt.Errorf("client: lookup %s: %w", canon, err)
	}
	var pinned ed25519.PublicKey
	pin, hasPin := st.Pins[canon]
	_, own := st.Handles[canon]
	// SPEC(design.md 13.5): a verification pin is per-contact strict mode,
	// whatever Config.Strict, and takes precedence over a first-use pin.
	vpin := st.Verified[canon]
	if own {
		vpin = nil
	}
	switch vkey, vacct := verifiedAccountKey(vpin); {
	case own:
		// The owner's own handles are not pinned on first use: in strict
		// mode they must carry this device's account key, if it holds one
		// (a set the recovery path wrote without it is refused for the
		// copies to the sender's own devices too).
		hasPin = true
		if c.cfg.Strict && st.Account != nil {
			pin = [32]byte(st.Account.Public().(ed25519.PublicKey))
			pinned = pin[:]
		}
	case vpin != nil:
		hasPin = true
		if vacct {
			pin = vkey
			pinned = pin[:]
		}
	case c.cfg.Strict && hasPin:
		pinned = pin[:]
	}
	now := c.cfg.Now()
	res, err := VerifyLookup(c.params(), st.Trusted, canon, resp, now, pinned)
	if err != nil {
		if vpin != nil && errors.Is(err, ErrStrict) {
			return nil, c.verifiedChanged(vpin, st.Trusted, canon, resp, now, err)
		}
		if pinned != nil && errors.Is(err, ErrStrict) {
			// Surface a validly signed change of the account key.
			if r2, err2 := VerifyLookup(c.params(), st.Trusted, canon, resp, now, nil); err2 == nil &&
				r2.DeviceSet.Account != nil && r2.DeviceSet.VerifyAccount(c.params().Origin, r2.RecordIndex, r2.Version) == nil {
				return nil, &VerifyError{Step: StepStrict, Err: &AccountKeyChangedError{Handle: canon, Pinned: pin, New: r2.DeviceSet.Account.Key}}
			}
		}
		return nil, err
	}
	if vpin != nil {
		if err := c.checkVerified(vpin, res); err != nil {
			return nil, err
		}
	}
	newPin := false
	if c.cfg.Strict && !hasPin && res.Registered && !res.DeviceSet.IsTombstone() {
		// SPEC(design.md 12.2 step 7), pin on first use: the set must carry
		// an account key whose signature verifies for this index and
		// version.
		set := res.DeviceSet
		if set.Account == nil {
			return nil, fail(StepStrict, ErrStrict, nil, "%s has no account key", canon)
		}
		if err := set.VerifyAccount(c.params().Origin, res.RecordIndex, res.Version); err != nil {
			return nil, fail(StepStrict, ErrStrict, err, "")
		}
		newPin = true
	}
	// SPEC(design.md 13.3): "the sender's client remembers, per contact
	// handle it encrypted to (store, durably, with the same write that
	// stores T)", and checks a remembered contact in every lookup.
	trusted := res.Trusted
	old := st.Contacts[canon]
	var contact *Contact
	switch {
	case own:
	case old != nil:
		if contact, trusted, err = c.checkContact(ctx, old, res, resp); err != nil {
			return nil, err
		}
	case remember && res.Registered:
		if contact, err = contactOf(res, resp); err != nil {
			return nil, fmt.Errorf("client: remembering %s: %w", canon, err)
		}
	}
	if c.cfg.GossipOnLookup && len(c.cfg.Auditors) > 0 && (st.Trusted == nil || trusted.Size != st.Trusted.Size || trusted.Root != st.Trusted.Root) {
		if _, err := c.gossipAll(ctx, trusted); err != nil {
			return nil, err
		}
	}
	err = c.commit(ctx, st.Trusted, func(s *State) error {
		s.Trusted = trusted
		if contact != nil {
			if !sameContact(s.Contacts[canon], old) {
				return errStateMoved
			}
			s.Contacts = cloneMap(s.Contacts)
			s.Contacts[canon] = contact
		}
		if newPin {
			if s.Pins == nil {
				s.Pins = map[string][32]byte{}
			}
			s.Pins[canon] = res.DeviceSet.Account.Key
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// Repin replaces the strict-mode pin of handle's account key with key, or
// removes it when key is nil (the next lookup pins on first use again).
func (c *Client) Repin(ctx context.Context, handle string, key *[32]byte) error {
	canon, err := api.NormalizeHandle(handle)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.update(ctx, func(s *State) error {
		if key == nil {
			delete(s.Pins, canon)
			return nil
		}
		if s.Pins == nil {
			s.Pins = map[string][32]byte{}
		}
		s.Pins[canon] = *key
		return nil
	})
}

// ErrNoDevices reports that a handle reaches no device: it is not
// registered, or its device set is a tombstone.
var ErrNoDevices = errors.New("client: the handle has no devices")

// Encrypt verifies handle's device set (and the sender's own, from the
// primary handle) and encrypts plaintext to every device of both except
// this one: one [Envelope] per device, recipient's devices first, each in
// format 2 signed by this device's message-signing key (design.md 12.3),
// with one random message ID. The device must have a primary handle
// whose verified set holds its message-signing key ([ErrCannotSign]
// otherwise; see [Client.UpgradeMessageKey]). Nothing
// is returned unless every verification and every HPKE operation
// succeeded; there is no fallback to unverified keys. The recipient is
// remembered as a contact (design.md 13.3) in the write that stores the
// trusted state, and a remembered recipient is checked first: an alert
// ([ErrContactChanged], [ErrContactChain]) produces no envelope.
//
// SPEC(design.md 12.3)
func (c *Client) Encrypt(ctx context.Context, handle string, plaintext []byte) ([]*Envelope, error) {
	if len(plaintext) > MaxPlaintext {
		return nil, fmt.Errorf("client: message of %d bytes, more than %d", len(plaintext), MaxPlaintext)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	// SPEC(design.md 12.2)
	if err := st.refused(c.params()); err != nil {
		return nil, err
	}
	to, err := withRotations(ctx, c, func() (*LookupResult, error) { return c.lookupAs(ctx, handle, true) })
	if err != nil {
		return nil, err
	}
	if !to.Registered || len(to.Recipients) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoDevices, to.Handle)
	}
	var self [16]byte
	hasSelf := st.Device != nil
	if hasSelf {
		self = st.Device.ID
	}
	from := st.Primary
	var fromRes *LookupResult
	if from == to.Handle {
		fromRes = to
	}
	type target struct {
		owner string
		r     *Recipient
	}
	var targets []target
	for i := range to.Recipients {
		r := &to.Recipients[i]
		if from == to.Handle && hasSelf && r.Device.ID == self {
			continue
		}
		targets = append(targets, target{to.Handle, r})
	}
	if from != "" && from != to.Handle {
		own, err := withRotations(ctx, c, func() (*LookupResult, error) { return c.lookup(ctx, from) })
		if err != nil {
			return nil, fmt.Errorf("client: verifying the sender's own devices: %w", err)
		}
		fromRes = own
		for i := range own.Recipients {
			r := &own.Recipients[i]
			if hasSelf && r.Device.ID == self {
				continue
			}
			targets = append(targets, target{from, r})
		}
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("%w: %s has no device but this one", ErrNoDevices, to.Handle)
	}
	if !hasSelf {
		return nil, fmt.Errorf("%w: %w", ErrCannotSign, ErrNoDevice)
	}
	key, err := signingKey(st, fromRes)
	if err != nil {
		return nil, err
	}
	id, ts := newMessageID(), uint64(max(c.cfg.Now().UnixMilli(), 0))
	out := make([]*Envelope, 0, len(targets))
	for _, t := range targets {
		e := &Envelope{Version: EnvelopeV2, Suite: t.r.Device.Suite, Device: t.r.Device.ID, From: from, To: to.Handle, Owner: t.owner,
			SenderDevice: self, Timestamp: ts, MessageID: id}
		if err := e.seal(t.r, plaintext); err != nil {
			return nil, fmt.Errorf("client: encrypting to device %x of %s: %w", t.r.Device.ID, t.owner, err)
		}
		// SPEC(design.md 12.3): signed over everything, enc and
		// ciphertext included.
		e.Sign(c.params().Origin, key)
		out = append(out, e)
	}
	return out, nil
}

// ErrNoDevice reports an operation that needs this device's keys before
// [Client.Init].
var ErrNoDevice = errors.New("client: this device has no keys yet")
