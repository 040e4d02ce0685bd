package api

import "encoding/binary"

// decoder reads a canonical encoding front to back. The first failure sticks:
// later reads return zero values, and err reports the failure with its
// offset.
type decoder struct {
	what string
	b    []byte
	off  int
	err  error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = formatErr(d.what, d.off, format, args...)
	}
}

// take returns the next n bytes, or nil after a failure.
func (d *decoder) take(n int, field string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b)-d.off < n {
		d.fail("truncated %s: need %d bytes, have %d", field, n, len(d.b)-d.off)
		return nil
	}
	s := d.b[d.off : d.off+n]
	d.off += n
	return s
}

func (d *decoder) u8(field string) uint8 {
	s := d.take(1, field)
	if s == nil {
		return 0
	}
	return s[0]
}

func (d *decoder) u16(field string) uint16 {
	s := d.take(2, field)
	if s == nil {
		return 0
	}
	return binary.BigEndian.Uint16(s)
}

func (d *decoder) u64(field string) uint64 {
	s := d.take(8, field)
	if s == nil {
		return 0
	}
	return binary.BigEndian.Uint64(s)
}

func (d *decoder) array32(dst *[32]byte, field string) {
	if s := d.take(32, field); s != nil {
		copy(dst[:], s)
	}
}

// end fails unless every byte was consumed.
func (d *decoder) end() error {
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d trailing bytes", len(d.b)-d.off)
	}
	return d.err
}

// appendLabel appends a domain-separation label and its zero terminator.
func appendLabel(b []byte, label string) []byte {
	b = append(b, label...)
	return append(b, 0)
}

// appendOrigin appends uint16 len(origin) || origin. Origins are checkpoint
// origin lines, far below the limit; a longer one is a configuration bug.
func appendOrigin(b []byte, origin string) []byte {
	if len(origin) > 0xffff {
		panic("api: origin longer than 65535 bytes")
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(origin)))
	return append(b, origin...)
}
