package ktctl

import "encoding/hex"

// Hex is a byte string that JSON encodes as lowercase hexadecimal, the form
// the CLI prints and accepts (VRF indices, hashes, keys).
type Hex []byte

// MarshalText implements encoding.TextMarshaler.
func (h Hex) MarshalText() ([]byte, error) {
	out := make([]byte, hex.EncodedLen(len(h)))
	hex.Encode(out, h)
	return out, nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *Hex) UnmarshalText(b []byte) error {
	out := make([]byte, hex.DecodedLen(len(b)))
	if _, err := hex.Decode(out, b); err != nil {
		return err
	}
	*h = out
	return nil
}

// String returns the hexadecimal form.
func (h Hex) String() string { return hex.EncodeToString(h) }
