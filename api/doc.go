// Package api defines the wire formats that every party of the key
// transparency system shares: the log entries the directory appends (change
// records and epoch records), the device set a change record commits to, the
// byte strings that get signed, hashed and fed to the VRF, and the canonical
// form of handles.
//
// The normative specification is docs/design.md; this package implements it
// byte for byte and the golden files under testdata/ pin the encodings.
//
// # Encodings
//
// Every encoding is canonical: for each value there is exactly one byte
// string, and the parsers accept only that string. Parsers reject trailing
// bytes, unknown format versions and entry types, unsorted or duplicate list
// elements, counts over the limits, and unknown enumeration values. A
// rejection is a [*FormatError] that wraps [ErrMalformed], so callers test it
// with errors.Is and can still read which field and byte offset failed.
//
// All integers are big-endian. Fixed-size fields (hashes, keys, signatures,
// identifiers) are Go arrays, so a value of these types cannot hold a field
// of the wrong size.
//
// # Domain separation
//
// Every hash and signature input starts with a distinct label of the form
// "kt/v1/<purpose>" followed by a zero byte: see [ChangeStatement],
// [AccountStatement], [Commit] and [VRFInput].
package api
