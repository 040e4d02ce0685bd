package api

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
)

// EpochRecordSize is the size of an encoded [EpochRecord].
const EpochRecordSize = 2 + 8 + 8 + 8 + 32 + 8

// EpochRecord closes an epoch: it commits, in the log, to the map root after
// every change record that precedes it in the log.
type EpochRecord struct {
	// Epoch numbers epoch records 0, 1, 2, ... in log order.
	Epoch uint64
	// Timestamp is when the directory closed the epoch, in milliseconds
	// since the Unix epoch; non-decreasing along the log.
	Timestamp uint64
	// LogSize is the number of log entries before this record, which is
	// this record's own index in the log.
	LogSize uint64
	// MapRoot is the sparse Merkle map root after applying every change
	// record with a log index below LogSize.
	MapRoot [32]byte
	// MapSize is the number of leaves (VRF indices) in that map.
	MapSize uint64
}

// Type returns [TypeEpoch].
func (*EpochRecord) Type() EntryType { return TypeEpoch }
func (*EpochRecord) isEntry()        {}

// AppendBinary appends the canonical encoding. It never fails.
//
// SPEC(design.md 5.1)
func (e *EpochRecord) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, FormatVersion, byte(TypeEpoch))
	b = binary.BigEndian.AppendUint64(b, e.Epoch)
	b = binary.BigEndian.AppendUint64(b, e.Timestamp)
	b = binary.BigEndian.AppendUint64(b, e.LogSize)
	b = append(b, e.MapRoot[:]...)
	b = binary.BigEndian.AppendUint64(b, e.MapSize)
	return b, nil
}

// MarshalBinary returns the canonical encoding. It never fails.
func (e *EpochRecord) MarshalBinary() ([]byte, error) {
	return e.AppendBinary(make([]byte, 0, EpochRecordSize))
}

// ParseEpochRecord parses an encoded epoch record.
//
// SPEC(design.md 5.1)
func ParseEpochRecord(b []byte) (*EpochRecord, error) {
	d := &decoder{what: "epoch record", b: b}
	parseHeader(d, TypeEpoch)
	e := &EpochRecord{
		Epoch:     d.u64("epoch"),
		Timestamp: d.u64("timestamp"),
		LogSize:   d.u64("log size"),
	}
	d.array32(&e.MapRoot, "map root")
	e.MapSize = d.u64("map size")
	if err := d.end(); err != nil {
		return nil, err
	}
	return e, nil
}

// EpochChain is what the epoch rules need to know about the log entries
// before the one being checked: the epoch number the next epoch record must
// have and the latest epoch timestamp. The zero value is the chain before
// entry 0. [CheckEpoch] returns the chain after each entry.
type EpochChain struct {
	// Next is the number the next epoch record must have: 0 until an
	// epoch record is seen, then the latest epoch record's number + 1.
	Next uint64
	// Time is the largest epoch timestamp seen (Unix milliseconds), 0
	// before any epoch record.
	Time uint64
}

// Started reports whether an epoch record was seen: a change record before
// the first epoch record breaks the entry 0 rule.
func (c EpochChain) Started() bool { return c.Next > 0 }

// CheckEpoch applies the rules of the log's epoch sequence to entry j,
// given the chain c of the entries before it, and returns the chain after
// it and every rule the entry breaks, as [*EpochError] values in the order
// of design.md 14 step 3 (nil if none).
//
// ent is the parsed entry, or nil if entry j does not parse (the caller
// reports RuleParse). For an *EpochRecord, mapRoot and mapSize are the root
// and the number of leaves of the map the caller recomputed over every
// change record before j (the map is outside this package); they are
// ignored for other entries.
//
// The rules: entry 0 is epoch record 0 with log size 0, the empty map root
// (32 zero bytes) and map size 0, so an entry 0 that does not parse or is
// a change record, and a change record before the first epoch record,
// break RuleFirstEntry. An epoch record has the next epoch number (0
// first), log size j, a timestamp not before the previous epoch's, and
// the recomputed map root and size.
//
// After a broken rule the returned chain follows the entry (the next epoch
// number is the record's + 1, the time the larger of the two), so that a
// caller that keeps replaying (the auditor) reports each fault once; a
// caller that stops at the first error (the directory) does not use it.
//
// SPEC(design.md 7): "Entry 0 of every log is epoch record 0, with log
// size 0, the empty map root (32 zero bytes) and map size 0."
// SPEC(design.md 14 step 1)
// SPEC(design.md 14 step 3): "epoch = previous + 1 (0 first); log size
// = j; timestamp ≥ previous; map root and map size equal the map
// recomputed over every change record before j (A6)."
func CheckEpoch(c EpochChain, j uint64, ent Entry, mapRoot [32]byte, mapSize uint64) (EpochChain, []*EpochError) {
	var errs []*EpochError
	broke := func(rule Rule, format string, args ...any) {
		errs = append(errs, &EpochError{Index: j, Rule: rule, Reason: fmt.Sprintf(format, args...)})
	}
	r, ok := ent.(*EpochRecord)
	if !ok {
		switch {
		case j == 0 && ent == nil:
			broke(RuleFirstEntry, "entry 0 does not parse")
		case j == 0:
			broke(RuleFirstEntry, "entry 0 is a %s record", ent.Type())
		case ent != nil && !c.Started():
			broke(RuleFirstEntry, "a %s record before epoch record 0", ent.Type())
		}
		return c, errs
	}
	if j == 0 && (r.Epoch != 0 || r.MapRoot != ([32]byte{}) || r.MapSize != 0) {
		broke(RuleFirstEntry, "entry 0 is not epoch record 0 with the empty map")
	}
	if r.Epoch != c.Next {
		broke(RuleEpochNumber, "epoch %d, want %d", r.Epoch, c.Next)
	}
	if r.LogSize != j {
		broke(RuleEpochLogSize, "log size %d in the record at index %d", r.LogSize, j)
	}
	if r.Timestamp < c.Time {
		broke(RuleEpochTimestamp, "timestamp %d before the previous epoch's %d", r.Timestamp, c.Time)
	}
	if mapRoot != r.MapRoot {
		broke(RuleMapRoot, "published map root %s, recomputed %s", b64(r.MapRoot[:]), b64(mapRoot[:]))
	}
	if mapSize != r.MapSize {
		broke(RuleMapSize, "published map size %d, recomputed %d", r.MapSize, mapSize)
	}
	return EpochChain{Next: r.Epoch + 1, Time: max(c.Time, r.Timestamp)}, errs
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
