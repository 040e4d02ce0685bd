package api

import (
	"crypto/ed25519"
	"encoding/binary"
	"time"
)

// monitorLabel domain-separates the owner's Monitor authorization.
const monitorLabel = "kt/v1/monitor"

// MonitorAuthWindow is how far from the directory's clock the timestamp of
// a Monitor authorization may be, either way (design.md 13.4).
const MonitorAuthWindow = 5 * time.Minute

// MonitorStatement returns the bytes that the owner signs to read the
// openings and device sets of index's history (design.md 13.4):
//
//	"kt/v1/monitor" || 0x00 || uint16 len(origin) || origin || index
//	  || uint64 knownVersion || uint64 knownSize || uint64 timestampMs
//
// It binds the request's position (known version and trusted size) and
// its time, so a captured authorization is good for one request shape of
// one index of one log, within [MonitorAuthWindow] of timestampMs.
//
// SPEC(design.md 13.4)
func MonitorStatement(origin string, index [32]byte, knownVersion, knownSize, timestampMs uint64) []byte {
	b := make([]byte, 0, len(monitorLabel)+1+2+len(origin)+32+24)
	b = appendLabel(b, monitorLabel)
	b = appendOrigin(b, origin)
	b = append(b, index[:]...)
	b = binary.BigEndian.AppendUint64(b, knownVersion)
	b = binary.BigEndian.AppendUint64(b, knownSize)
	return binary.BigEndian.AppendUint64(b, timestampMs)
}

// SignMonitor returns key's public key and its signature of
// MonitorStatement(origin, index, knownVersion, knownSize, timestampMs).
//
// SPEC(design.md 13.4)
func SignMonitor(origin string, key ed25519.PrivateKey, index [32]byte, knownVersion, knownSize, timestampMs uint64) (signer [32]byte, sig [64]byte) {
	copy(signer[:], key.Public().(ed25519.PublicKey))
	copy(sig[:], ed25519.Sign(key, MonitorStatement(origin, index, knownVersion, knownSize, timestampMs)))
	return signer, sig
}
