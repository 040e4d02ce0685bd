package directory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/vrf"
)

// The embedded store is Pebble (github.com/cockroachdb/pebble/v2), an LSM
// key-value store in pure Go. Why Pebble rather than bbolt: the write path
// is a stream of small random-key inserts (one payload per change, keyed by
// a hash), which an LSM absorbs with sequential writes while a B+tree
// rewrites random pages; a Pebble batch committed with Sync costs one WAL
// fsync however large it is, which is what group commit needs; and its
// block cache is bounded (Config.CacheSize), so memory at 10M handles is
// the map plus a fixed cache, not the file size (bbolt maps the whole file
// and relies on the page cache).
//
// Key layout (one prefix byte, then fixed-size binary fields; values are
// fixed-layout binary):
//
//	'h' handle                 -> index (32) || VRF proof (80)
//	                              VRF cache of registered handles; proofs are
//	                              deterministic, so storing them is exact.
//	'p' leaf hash (32)         -> u16 len || change record || opening (32) || device set
//	                              the payload of a change record; written and
//	                              synced BEFORE the record is appended.
//	's' index (32)             -> version (8) || leaf hash (32) || log index (8)
//	                              [|| account ID (16) || n (1) || n authorizers (33 each)]
//	                              latest appended record of the index, with
//	                              what the rules need about it (its
//	                              authorizers and its device set's account
//	                              ID), so that checking a change reads no
//	                              payload; 48-byte values (older stores,
//	                              replay without the payload) leave that to
//	                              the payload.
//	'v' index (32) version (8) -> leaf hash (32) || log index (8)
//	                              history, for monitoring.
//	'k' index (32)             -> leaf hash (32)
//	                              map leaves as of the stored epoch.
//	'm' "applied"              -> u64: log entries reflected in 's' and 'v'.
//	'm' "inflight"             -> u64: log size once the append in flight
//	                              (if any) completes; written before it.
//	'm' "epoch"                -> the latest epoch: see epochMeta.
//
// 's', 'v', 'k' and the meta keys are a materialised view of the log: New
// rebuilds them by replay when they are behind or missing. 'p' and 'h' are
// not in the log (privacy): losing 'p' loses the openings, so lookups of
// the affected handles fail with ErrUnavailable until their next change.
const (
	pfxHandle  = 'h'
	pfxPayload = 'p'
	pfxState   = 's'
	pfxHistory = 'v'
	pfxLeaf    = 'k'
	pfxMeta    = 'm'
)

var (
	keyApplied  = []byte("mapplied")
	keyInflight = []byte("minflight")
	keyEpoch    = []byte("mepoch")
)

type store struct {
	db *pebble.DB
}

func openStore(dir string, cacheSize int64) (*store, error) {
	c := pebble.NewCache(cacheSize)
	defer c.Unref()
	opts := &pebble.Options{
		Cache:              c,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             quietLogger{},
		// Larger memtables absorb write bursts; two of them bound memory.
		MemTableSize: 64 << 20,
	}
	// Every read is a point Get (lookups read 'h' and 'p', the sequencer
	// 's' and 'p'): Bloom filters (10 bits per key, about 1% false
	// positives) let a Get skip the tables that do not hold its key, which
	// after a bulk load are most of them. Later levels inherit L0's policy.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("directory: opening store in %s: %w", dir, err)
	}
	return &store{db: db}, nil
}

// quietLogger drops Pebble's informational logs and keeps errors.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)      {}
func (quietLogger) Errorf(f string, a ...any) { slog.Error("pebble: " + fmt.Sprintf(f, a...)) }
func (quietLogger) Fatalf(f string, a ...any) { panic(fmt.Sprintf("pebble: "+f, a...)) }

func (s *store) close() error { return s.db.Close() }

// get returns a copy of the value of key, or nil, false.
func (s *store) get(key []byte) ([]byte, bool, error) {
	v, c, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("directory: store: %w", err)
	}
	out := slices.Clone(v)
	c.Close()
	return out, true, nil
}

func (s *store) getU64(key []byte) (uint64, bool, error) {
	v, ok, err := s.get(key)
	if err != nil || !ok {
		return 0, ok, err
	}
	if len(v) != 8 {
		return 0, false, fmt.Errorf("directory: store: %q has %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), true, nil
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func handleKey(handle string) []byte { return append([]byte{pfxHandle}, handle...) }

func payloadKey(leaf [32]byte) []byte { return append([]byte{pfxPayload}, leaf[:]...) }

func stateKey(index [32]byte) []byte { return append([]byte{pfxState}, index[:]...) }

func leafKey(index [32]byte) []byte { return append([]byte{pfxLeaf}, index[:]...) }

func historyKey(index [32]byte, version uint64) []byte {
	b := append([]byte{pfxHistory}, index[:]...)
	return binary.BigEndian.AppendUint64(b, version)
}

// vrfEntry is a cached VRF evaluation.
type vrfEntry struct {
	index [32]byte
	proof []byte
}

func (s *store) vrf(handle string) (*vrfEntry, bool, error) {
	v, ok, err := s.get(handleKey(handle))
	if err != nil || !ok {
		return nil, ok, err
	}
	if len(v) != 32+vrf.ProofSize {
		return nil, false, fmt.Errorf("directory: store: VRF entry of %q has %d bytes", handle, len(v))
	}
	return &vrfEntry{index: [32]byte(v[:32]), proof: v[32:]}, true, nil
}

func encodeVRF(e *vrfEntry) []byte { return append(e.index[:], e.proof...) }

// payload is what the log does not hold about a change record.
type payload struct {
	record    []byte
	opening   [32]byte
	deviceSet []byte
}

func encodePayload(p *payload) []byte {
	b := make([]byte, 0, 2+len(p.record)+32+len(p.deviceSet))
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.record)))
	b = append(b, p.record...)
	b = append(b, p.opening[:]...)
	return append(b, p.deviceSet...)
}

func decodePayload(v []byte) (*payload, error) {
	if len(v) < 2 {
		return nil, errors.New("directory: store: truncated payload")
	}
	n := int(binary.BigEndian.Uint16(v))
	if len(v) < 2+n+32 {
		return nil, errors.New("directory: store: truncated payload")
	}
	return &payload{record: v[2 : 2+n], opening: [32]byte(v[2+n : 2+n+32]), deviceSet: v[2+n+32:]}, nil
}

func (s *store) payload(leaf [32]byte) (*payload, bool, error) {
	v, ok, err := s.get(payloadKey(leaf))
	if err != nil || !ok {
		return nil, ok, err
	}
	p, err := decodePayload(v)
	return p, err == nil, err
}

// headState is the latest appended record of an index.
type headState struct {
	version  uint64
	leaf     [32]byte
	logIndex uint64

	// rules is what the authorization rules need about the record, when
	// known (nil: read it from the record's payload).
	rules *headRules
}

// headRules is what the authorization rules need about a handle's latest
// record besides its version and leaf hash.
type headRules struct {
	authorizers []api.Authorizer // the record's, in canonical order
	accountID   [16]byte         // of the record's device set
}

func encodeHead(h headState) []byte {
	b := make([]byte, 0, 48+17+33*len(h.rulesAuthorizers()))
	b = binary.BigEndian.AppendUint64(b, h.version)
	b = append(b, h.leaf[:]...)
	b = binary.BigEndian.AppendUint64(b, h.logIndex)
	if h.rules == nil {
		return b
	}
	b = append(b, h.rules.accountID[:]...)
	b = append(b, byte(len(h.rules.authorizers)))
	for _, a := range h.rules.authorizers {
		b = append(b, byte(a.Role))
		b = append(b, a.Digest[:]...)
	}
	return b
}

func (h headState) rulesAuthorizers() []api.Authorizer {
	if h.rules == nil {
		return nil
	}
	return h.rules.authorizers
}

func decodeHead(v []byte) (headState, error) {
	if len(v) < 48 {
		return headState{}, fmt.Errorf("%d bytes", len(v))
	}
	h := headState{version: binary.BigEndian.Uint64(v), leaf: [32]byte(v[8:40]), logIndex: binary.BigEndian.Uint64(v[40:48])}
	v = v[48:]
	if len(v) == 0 {
		return h, nil
	}
	if len(v) < 17 || len(v) != 17+33*int(v[16]) || int(v[16]) > api.MaxAuthorizers {
		return headState{}, fmt.Errorf("%d bytes", 48+len(v))
	}
	r := &headRules{accountID: [16]byte(v[:16]), authorizers: make([]api.Authorizer, v[16])}
	for i := range r.authorizers {
		a := v[17+33*i:]
		r.authorizers[i] = api.Authorizer{Role: api.Role(a[0]), Digest: [32]byte(a[1:33])}
	}
	h.rules = r
	return h, nil
}

func (s *store) head(index [32]byte) (headState, bool, error) {
	v, ok, err := s.get(stateKey(index))
	if err != nil || !ok {
		return headState{}, ok, err
	}
	h, err := decodeHead(v)
	if err != nil {
		return headState{}, false, fmt.Errorf("directory: store: state of %x: %w", index, err)
	}
	return h, true, nil
}

// historyEntry is one version of an index.
// replayedHead is the handle state of change record r at log index j,
// replayed from the log. With the record's device set (the payload; nil if
// it is not known) it carries the rules a change check needs, as the
// sequencer writes it; without, checks fall back to reading the payload.
func replayedHead(r *api.ChangeRecord, leaf [32]byte, j uint64, deviceSet []byte) headState {
	h := headState{version: r.Version, leaf: leaf, logIndex: j}
	if len(deviceSet) >= 17 {
		h.rules = &headRules{authorizers: r.Authorizers, accountID: [16]byte(deviceSet[1:17])}
	}
	return h
}

type historyEntry struct {
	leaf     [32]byte
	logIndex uint64
}

func (s *store) history(index [32]byte, version uint64) (historyEntry, bool, error) {
	v, ok, err := s.get(historyKey(index, version))
	if err != nil || !ok {
		return historyEntry{}, ok, err
	}
	if len(v) != 40 {
		return historyEntry{}, false, fmt.Errorf("directory: store: history of %x v%d has %d bytes", index, version, len(v))
	}
	return historyEntry{leaf: [32]byte(v[:32]), logIndex: binary.BigEndian.Uint64(v[32:])}, true, nil
}

func encodeHistory(h historyEntry) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), h.leaf[:]...), h.logIndex)
}

// epochMeta is the latest published epoch as stored.
type epochMeta struct {
	record     []byte // epoch record encoding
	logIndex   uint64
	checkpoint []byte
	inclusion  [][]byte
}

func encodeEpochMeta(m *epochMeta) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(m.record)))
	b = append(b, m.record...)
	b = binary.BigEndian.AppendUint64(b, m.logIndex)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.checkpoint)))
	b = append(b, m.checkpoint...)
	for _, h := range m.inclusion {
		b = append(b, h...)
	}
	return b
}

func decodeEpochMeta(v []byte) (*epochMeta, error) {
	bad := errors.New("directory: store: malformed epoch meta")
	if len(v) < 2 {
		return nil, bad
	}
	n := int(binary.BigEndian.Uint16(v))
	v = v[2:]
	if len(v) < n+8+4 {
		return nil, bad
	}
	m := &epochMeta{record: slices.Clone(v[:n]), logIndex: binary.BigEndian.Uint64(v[n:])}
	v = v[n+8:]
	c := int(binary.BigEndian.Uint32(v))
	v = v[4:]
	if len(v) < c || (len(v)-c)%32 != 0 {
		return nil, bad
	}
	m.checkpoint = slices.Clone(v[:c])
	for v = v[c:]; len(v) > 0; v = v[32:] {
		m.inclusion = append(m.inclusion, slices.Clone(v[:32]))
	}
	return m, nil
}

// leaves returns every map leaf stored under 'k' (the stored epoch's map).
func (s *store) leaves() ([][2][32]byte, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxLeaf}, UpperBound: []byte{pfxLeaf + 1}})
	if err != nil {
		return nil, fmt.Errorf("directory: store: %w", err)
	}
	defer it.Close()
	var out [][2][32]byte
	for ok := it.First(); ok; ok = it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != 33 || len(v) != 32 {
			return nil, fmt.Errorf("directory: store: malformed map leaf %x", k)
		}
		out = append(out, [2][32]byte{[32]byte(k[1:]), [32]byte(v)})
	}
	return out, it.Error()
}

// parsePayloadRecord parses the change record of a stored payload.
func parsePayloadRecord(p *payload) (*api.ChangeRecord, error) {
	r, err := api.ParseChangeRecord(p.record)
	if err != nil {
		return nil, fmt.Errorf("directory: store: stored change record: %w", err)
	}
	return r, nil
}

// BackupState writes a consistent copy of the directory's state store to
// dst (which must not exist), with Pebble's checkpoint: hard links to the
// immutable tables where the filesystem allows, the WAL flushed first.
// Taken while the log's appends are paused (ktd backup), the copy refers
// to no entry the log's copy lacks; entries the copy of the log has and
// the state lacks are applied at start, as after a crash.
//
// Issue 17 item 7.
func (d *Directory) BackupState(dst string) error {
	if err := d.st.db.Checkpoint(dst, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("directory: state backup: %w", err)
	}
	return nil
}
