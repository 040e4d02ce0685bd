package api

// FormatVersion is the first byte of every log entry and of every device set
// encoding. A parser rejects any other value: a new format gets a new
// version byte, never a silent reinterpretation of old bytes.
const FormatVersion byte = 0x01

// EntryType is the second byte of every log entry.
type EntryType uint8

const (
	// TypeChange marks a [ChangeRecord].
	TypeChange EntryType = 0x01
	// TypeEpoch marks an [EpochRecord].
	TypeEpoch EntryType = 0x02
)

func (t EntryType) String() string {
	switch t {
	case TypeChange:
		return "change"
	case TypeEpoch:
		return "epoch"
	case TypeRotation:
		return "rotation"
	case TypeMove:
		return "move"
	default:
		return "unknown"
	}
}

// Entry is a log entry: a [*ChangeRecord], an [*EpochRecord], a
// [*RotationRecord] or a [*MoveEntry]. The set of
// implementations is closed; switch on the concrete type.
type Entry interface {
	// Type returns the entry's type byte.
	Type() EntryType
	// MarshalBinary returns the canonical encoding, or a [*FormatError] if
	// the value has none (for example, unsorted authorizers).
	MarshalBinary() ([]byte, error)
	// AppendBinary appends the canonical encoding to b.
	AppendBinary(b []byte) ([]byte, error)

	isEntry()
}

// ParseEntry parses a log entry of any type.
//
// SPEC(design.md 5.1)
func ParseEntry(b []byte) (Entry, error) {
	if len(b) < 2 {
		return nil, formatErr("entry", len(b), "truncated header: need 2 bytes, have %d", len(b))
	}
	if b[0] != FormatVersion {
		return nil, formatErr("entry", 0, "unknown format version 0x%02x", b[0])
	}
	switch EntryType(b[1]) {
	case TypeChange:
		return ParseChangeRecord(b)
	case TypeEpoch:
		return ParseEpochRecord(b)
	case TypeRotation:
		return ParseRotationRecord(b)
	case TypeMove:
		return ParseMoveEntry(b)
	default:
		return nil, formatErr("entry", 1, "unknown entry type 0x%02x", b[1])
	}
}

// parseHeader checks the version and type bytes of an entry of a known type.
func parseHeader(d *decoder, want EntryType) {
	if v := d.u8("format version"); d.err == nil && v != FormatVersion {
		d.off--
		d.fail("unknown format version 0x%02x", v)
	}
	if t := d.u8("entry type"); d.err == nil && EntryType(t) != want {
		d.off--
		d.fail("entry type 0x%02x, want 0x%02x (%s)", t, byte(want), want)
	}
}
