package attacks

import (
	"testing"

	"github.com/keytrans/kt/client"
)

// wantRecipient checks that the recipient's client refused with exactly
// the given typed errors, in order.
func wantRecipient(t *testing.T, r *Result, want ...error) {
	t.Helper()
	ds := detections(t, r, ByRecipient)
	if len(ds) != len(want) {
		t.Fatalf("%d recipient refusals, want %d: %+v", len(ds), len(want), ds)
	}
	for i, d := range ds {
		wantErr(t, d, want[i])
	}
}

// TestA13ForgedSender: a message re-labelled as Alice's, signed by
// Mallory's device, claiming Alice's device, or unsigned: Bob's client
// refuses each (P10), after a control in which it authenticates Alice.
func TestA13ForgedSender(t *testing.T) {
	r := run(t, "A13")
	wantRecipient(t, r, client.ErrUnknownSenderDevice, client.ErrMessageSignature, client.ErrMessageSignature, client.ErrUnsignedEnvelope)
}

// TestA13RemovedDevice: a message signed by a device Alice removed is
// refused as from a removed device (by a recipient that verified it
// before) or an unknown one (by a recipient that never saw it).
func TestA13RemovedDevice(t *testing.T) {
	r := run(t, "A13R")
	wantRecipient(t, r, client.ErrSenderDeviceRemoved, client.ErrUnknownSenderDevice)
}

// TestA13Replay: Alice's genuine envelope delivered again, and one held
// back past the recipient's window, are refused.
func TestA13Replay(t *testing.T) {
	r := run(t, "A13P")
	wantRecipient(t, r, client.ErrMessageReplay, client.ErrMessageTime)
}
