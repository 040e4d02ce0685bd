package api

import "encoding/binary"

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
