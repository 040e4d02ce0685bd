package client_test

import (
	"errors"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/client"
)

// TestLockedOut: after the directory's recovery path replaced the owner's
// devices, the directory refuses the owner's device the device sets
// (design.md 13.4); its Monitor then verifies the public records and
// reports the kind-4 record as an AlertRecovery in a *LockedOutError,
// storing nothing. The control is the poll before the recovery, and the
// device's state, which stays at the version it verified.
func TestLockedOut(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	alice := e.device(client.Config{})
	e.enroll(alice, "alice@example.com", false)
	reps, err := alice.Monitor(ctx)
	if err != nil || len(reps) != 1 || len(reps[0].Alerts) != 0 {
		t.Fatalf("control poll: %v, %+v", err, reps)
	}
	before := reps[0].State.Version

	g := ghost(t)
	e.recover(alice, "alice@example.com", func(s *api.DeviceSet) { s.Devices = []api.Device{g} })
	_, err = alice.Monitor(ctx)
	var lo *client.LockedOutError
	if !errors.As(err, &lo) || !errors.Is(err, client.ErrLockedOut) {
		t.Fatalf("Monitor after the recovery: %v, want a *LockedOutError", err)
	}
	if lo.Version != before || lo.Latest != before+1 || len(lo.Changes) != 1 || lo.Changes[0].By != client.ByRecovery ||
		!hasAlert(lo.Alerts, client.AlertRecovery) || lo.Changes[0].DeviceSet != nil {
		t.Fatalf("locked out: %+v", lo)
	}
	// Nothing was stored: the next poll reports the same.
	if _, err := alice.Monitor(ctx); !errors.As(err, &lo) || lo.Version != before {
		t.Fatalf("second poll: %v", err)
	}
}
