package client

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
)

// This file holds the client state added for signed messages (design.md
// 12.3): the replay cache. Its only hooks in the state encoding are the
// Seen field of [State] and the "messages" member of the JSON.

// maxSeenMessages bounds the replay cache (design.md 12.3).
const maxSeenMessages = 4096

// SeenMessage is one accepted envelope in the replay cache: the hash of
// its sender and message ID, and its time (Unix milliseconds).
type SeenMessage struct {
	Key  [32]byte
	Time uint64
}

// SeenMessages is the replay cache of the envelopes this device accepted
// within the message window, oldest first (design.md 12.3). Values are
// replaced, never modified in place.
type SeenMessages struct {
	// Mark is the low-water mark: the time of the newest entry dropped
	// because the cache was full. An envelope at or before it is refused.
	Mark uint64
	// Entries in increasing time (ties in increasing key), at most 4096.
	Entries []SeenMessage
}

// seenKey is the replay cache's key of an envelope:
//
//	H("kt/v1/message-id" || 0x00 || u16 len(from) || from || sender device ID || message ID)
//
// SPEC(design.md 12.3)
func seenKey(e *Envelope) [32]byte {
	b := append([]byte("kt/v1/message-id"), 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.From)))
	b = append(b, e.From...)
	b = append(b, e.SenderDevice[:]...)
	b = append(b, e.MessageID[:]...)
	return sha256.Sum256(b)
}

// seen reports whether key is in the cache.
func (s *SeenMessages) seen(key [32]byte) bool {
	if s == nil {
		return false
	}
	return slices.ContainsFunc(s.Entries, func(m SeenMessage) bool { return m.Key == key })
}

// accept returns the cache with e's key added (at e's time, dropping the
// entries older than oldest), or ErrMessageReplay if e was accepted
// before (design.md 12.3 receiving step 8).
//
// SPEC(design.md 12.3 receiving step 8)
func (s *SeenMessages) accept(e *Envelope, key [32]byte, oldest uint64) (*SeenMessages, error) {
	if s.seen(key) {
		return nil, errReplay(e)
	}
	return s.with(key, e.Timestamp, oldest), nil
}

// errReplay is the refusal of an envelope whose message ID was accepted
// before.
func errReplay(e *Envelope) error {
	return fmt.Errorf("%w: %w: message %x from device %x of %s", ErrEnvelope, ErrMessageReplay, e.MessageID, e.SenderDevice, e.From)
}

// mark returns the low-water mark (0 for an empty cache).
func (s *SeenMessages) mark() uint64 {
	if s == nil {
		return 0
	}
	return s.Mark
}

// with returns a new cache with key at time t added, the entries older
// than oldest dropped, and, when full, the oldest entry dropped and its
// time made the low-water mark.
//
// SPEC(design.md 12.3)
func (s *SeenMessages) with(key [32]byte, t, oldest uint64) *SeenMessages {
	out := &SeenMessages{}
	if s != nil {
		out.Mark = s.Mark
		out.Entries = make([]SeenMessage, 0, len(s.Entries)+1)
		for _, m := range s.Entries {
			if m.Time >= oldest {
				out.Entries = append(out.Entries, m)
			}
		}
	}
	for len(out.Entries) >= maxSeenMessages {
		out.Mark = max(out.Mark, out.Entries[0].Time)
		out.Entries = out.Entries[1:]
	}
	n := SeenMessage{Key: key, Time: t}
	i, _ := slices.BinarySearchFunc(out.Entries, n, cmpSeen)
	out.Entries = slices.Insert(out.Entries, i, n)
	return out
}

func cmpSeen(a, b SeenMessage) int {
	if a.Time != b.Time {
		if a.Time < b.Time {
			return -1
		}
		return 1
	}
	return bytes.Compare(a.Key[:], b.Key[:])
}

// seenVersion is the first byte of an encoded SeenMessages.
const seenVersion = 0x01

// MarshalBinary encodes s for persistence:
//
//	u8 version (1) || u64 mark || u16 n || n × (key (32) || u64 time)
func (s *SeenMessages) MarshalBinary() ([]byte, error) {
	if len(s.Entries) > maxSeenMessages {
		return nil, fmt.Errorf("%w: %d seen messages", ErrState, len(s.Entries))
	}
	b := make([]byte, 0, 1+8+2+40*len(s.Entries))
	b = append(b, seenVersion)
	b = binary.BigEndian.AppendUint64(b, s.Mark)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.Entries)))
	for _, m := range s.Entries {
		b = append(b, m.Key[:]...)
		b = binary.BigEndian.AppendUint64(b, m.Time)
	}
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote, strictly: entries in
// order and distinct, no trailing bytes.
func (s *SeenMessages) UnmarshalBinary(b []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: seen messages: %s", ErrState, fmt.Sprintf(format, args...))
	}
	take := func(n int) []byte { return cutPrefix(&b, n) }
	h := take(1 + 8 + 2)
	if h == nil || h[0] != seenVersion {
		return bad("truncated or unknown version")
	}
	out := SeenMessages{Mark: binary.BigEndian.Uint64(h[1:])}
	n := int(binary.BigEndian.Uint16(h[9:]))
	if n > maxSeenMessages {
		return bad("%d entries, more than %d", n, maxSeenMessages)
	}
	if len(b) != 40*n {
		return bad("%d bytes for %d entries", len(b), n)
	}
	out.Entries = make([]SeenMessage, 0, n)
	for i := range n {
		e := take(40)
		if e == nil {
			return bad("truncated")
		}
		m := SeenMessage{Key: [32]byte(e), Time: binary.BigEndian.Uint64(e[32:])}
		if i > 0 && cmpSeen(out.Entries[i-1], m) >= 0 {
			return bad("entries out of order")
		}
		out.Entries = append(out.Entries, m)
	}
	if len(b) != 0 {
		return bad("%d trailing bytes", len(b))
	}
	*s = out
	return nil
}
