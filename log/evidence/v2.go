package evidence

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/keytrans/kt/api"
)

// HeaderV2 is the first line of a kt-evidence/v2 bundle.
const HeaderV2 = "kt-evidence/v2"

// Kind names what a bundle proves.
type Kind string

// The kinds of bundle: [KindFork] is kt-evidence/v1, the others v2.
const (
	// KindFork: two checkpoints that are not views of one append-only
	// log (kt-evidence/v1).
	KindFork Kind = "fork"
	// KindRecords: one or two change records of one VRF index that break
	// the authorization rules.
	KindRecords Kind = "records"
	// KindMapRegression: a later epoch's map that lost or rolled back a
	// key's record.
	KindMapRegression Kind = "map-regression"
	// KindVersionConflict: an epoch's map and a logged change record that
	// disagree on a version's record.
	KindVersionConflict Kind = "version-conflict"
	// KindMapRoot: the claim that an epoch record's map root or size is
	// not the map of the entries before it (checked by replay).
	KindMapRoot Kind = "map-root"
)

// v2 reports whether k is a kt-evidence/v2 kind.
func (k Kind) v2() bool {
	switch k {
	case KindRecords, KindMapRegression, KindVersionConflict, KindMapRoot:
		return true
	}
	return false
}

// Limits of a kt-evidence/v2 bundle, besides MaxCheckpointSize for its
// checkpoint and MaxProofHashes for the inclusion lines of one entry.
const (
	// MaxSizeV2 bounds a whole encoded v2 bundle.
	MaxSizeV2 = 1 << 20
	// MaxItemSize bounds an entry, a map proof and a value.
	MaxItemSize = 64 << 10
)

// Entry is a log entry in a v2 bundle: its log index, its bytes and its
// RFC 6962 inclusion proof in the bundle's checkpoint.
type Entry struct {
	Index     uint64
	Data      []byte
	Inclusion [][]byte
}

// MapValue is a map proof (smt wire format) that follows an epoch entry,
// and the value it proves: the change record whose leaf hash is the
// map's value for the key, or nil for absent.
type MapValue struct {
	Proof  []byte
	Record []byte // nil = absent
}

// ID returns the identifier of an encoded bundle (of either version): the
// hex SHA-256 of its bytes, as auditors name bundles in
// GET /kt/v1/evidence/<id>.
func ID(raw []byte) string {
	h := sha256.Sum256(raw)
	return hex.EncodeToString(h[:])
}

// isEpoch reports whether data is an epoch record.
func isEpoch(data []byte) bool {
	_, ok := parsedEntry(data).(*api.EpochRecord)
	return ok
}

func parsedEntry(data []byte) api.Entry {
	e, err := api.ParseEntry(data)
	if err != nil {
		return nil
	}
	return e
}

// parseV2 decodes a kt-evidence/v2 bundle strictly (design.md 15.1): the
// grammar, canonical base64 and decimal, the limits, entries in
// increasing log index, inclusion lines right after their entry, and a
// map-proof line (then its value line) only after an epoch entry, either
// after every epoch entry or after none.
//
// SPEC(design.md 15.1)
func parseV2(raw []byte) (*Bundle, error) {
	if len(raw) > MaxSizeV2 {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(raw), MaxSizeV2)
	}
	if len(raw) == 0 || raw[len(raw)-1] != '\n' {
		return nil, fmt.Errorf("%w: does not end with a newline", ErrMalformed)
	}
	lines := strings.Split(string(raw[:len(raw)-1]), "\n")
	if lines[0] != HeaderV2 {
		return nil, fmt.Errorf("%w: first line is not %q", ErrMalformed, HeaderV2)
	}
	if len(lines) < 4 {
		return nil, fmt.Errorf("%w: no kind, checkpoint or entry", ErrMalformed)
	}
	bad := func(i int, format string, args ...any) error {
		return fmt.Errorf("%w: line %d: %s", ErrMalformed, i+1, fmt.Sprintf(format, args...))
	}
	word, val, _ := strings.Cut(lines[1], " ")
	if word != "kind" || !Kind(val).v2() {
		return nil, bad(1, "not a kind line with a v2 kind")
	}
	b := &Bundle{Kind: Kind(val)}
	word, val, _ = strings.Cut(lines[2], " ")
	if word != "checkpoint" {
		return nil, bad(2, "not a checkpoint line")
	}
	cp, err := decode(val, MaxCheckpointSize)
	if err != nil {
		return nil, bad(2, "checkpoint: %v", err)
	}
	b.Checkpoint = cp
	// state after each line: what may come next.
	const (
		afterEntry = iota // inclusion, map-proof, entry
		afterMap          // value
		afterValue        // entry
	)
	state := afterValue
	epochs, withMap := 0, 0
	for i := 3; i < len(lines); i++ {
		word, val, _ := strings.Cut(lines[i], " ")
		switch {
		case word == "entry" && state != afterMap:
			sidx, sdata, ok := strings.Cut(val, " ")
			idx, err := strconv.ParseUint(sidx, 10, 64)
			if !ok || err != nil || strconv.FormatUint(idx, 10) != sidx {
				return nil, bad(i, "entry index is not a canonical decimal")
			}
			if n := len(b.Entries); n > 0 && idx <= b.Entries[n-1].Index {
				// SPEC(design.md 15.1): "Entries appear in increasing log index."
				return nil, bad(i, "entries out of order: index %d after %d", idx, b.Entries[n-1].Index)
			}
			d, err := decode(sdata, MaxItemSize)
			if err != nil {
				return nil, bad(i, "entry: %v", err)
			}
			b.Entries = append(b.Entries, Entry{Index: idx, Data: d})
			if isEpoch(d) {
				epochs++
			}
			state = afterEntry
		case word == "inclusion" && state == afterEntry:
			e := &b.Entries[len(b.Entries)-1]
			if len(e.Inclusion) == MaxProofHashes {
				return nil, bad(i, "more than %d inclusion lines", MaxProofHashes)
			}
			h, err := decode(val, sha256.Size)
			if err != nil || len(h) != sha256.Size {
				return nil, bad(i, "inclusion line is not one hash")
			}
			e.Inclusion = append(e.Inclusion, h)
		case word == "map-proof" && state == afterEntry:
			if !isEpoch(b.Entries[len(b.Entries)-1].Data) {
				return nil, bad(i, "map-proof after an entry that is not an epoch record")
			}
			p, err := decode(val, MaxItemSize)
			if err != nil {
				return nil, bad(i, "map-proof: %v", err)
			}
			b.Maps = append(b.Maps, MapValue{Proof: p})
			withMap++
			state = afterMap
		case word == "value" && state == afterMap:
			m := &b.Maps[len(b.Maps)-1]
			if val != "absent" {
				r, err := decode(val, MaxItemSize)
				if err != nil {
					return nil, bad(i, "value: %v", err)
				}
				m.Record = r
			}
			state = afterValue
		default:
			return nil, bad(i, "unexpected %q line", word)
		}
	}
	if state == afterMap {
		return nil, fmt.Errorf("%w: map-proof without a value line", ErrMalformed)
	}
	if withMap != 0 && withMap != epochs {
		return nil, fmt.Errorf("%w: %d of %d epoch entries have a map proof (all or none)", ErrMalformed, withMap, epochs)
	}
	return b, nil
}

// decode decodes canonical standard padded base64 of 1 to max bytes.
func decode(s string, max int) ([]byte, error) {
	d, err := b64.DecodeString(s)
	if err != nil || b64.EncodeToString(d) != s {
		return nil, fmt.Errorf("not canonical base64")
	}
	if len(d) == 0 || len(d) > max {
		return nil, fmt.Errorf("%d bytes (1 to %d)", len(d), max)
	}
	return d, nil
}

// marshalV2 encodes a v2 bundle. Maps[k] follows the k-th epoch entry;
// maps left over (more maps than epoch entries) follow the last entry.
//
// SPEC(design.md 15.1)
func (b *Bundle) marshalV2() []byte {
	var s bytes.Buffer
	s.WriteString(HeaderV2 + "\n")
	s.WriteString("kind " + string(b.Kind) + "\n")
	s.WriteString("checkpoint " + b64.EncodeToString(b.Checkpoint) + "\n")
	maps := b.Maps
	writeMap := func() {
		m := maps[0]
		maps = maps[1:]
		s.WriteString("map-proof " + b64.EncodeToString(m.Proof) + "\n")
		if m.Record == nil {
			s.WriteString("value absent\n")
		} else {
			s.WriteString("value " + b64.EncodeToString(m.Record) + "\n")
		}
	}
	for _, e := range b.Entries {
		s.WriteString("entry " + strconv.FormatUint(e.Index, 10) + " " + b64.EncodeToString(e.Data) + "\n")
		for _, h := range e.Inclusion {
			s.WriteString("inclusion " + b64.EncodeToString(h) + "\n")
		}
		if len(maps) > 0 && isEpoch(e.Data) {
			writeMap()
		}
	}
	for len(maps) > 0 {
		writeMap()
	}
	return s.Bytes()
}
