package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keytrans/kt/client"
)

// TestAwaitVisible: a change returns from AwaitVisible once lookups show
// it, so that the device's next change, made at once, builds on it; a
// version that lookups show with another record, or do not reach before
// the deadline, is ErrNotVisible.
func TestAwaitVisible(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	bob1, bob2, bob3 := e.device(client.Config{}), e.device(client.Config{}), e.device(client.Config{})
	e.enroll(bob1, "bob@example.com", false)

	// Two changes back to back, each awaited: the second builds on the
	// first, which without the wait it could not see yet.
	var last *client.Submitted
	for _, nc := range []*client.Client{bob2, bob3} {
		st, err := nc.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		subs, err := bob1.AddDevice(ctx, st.Device.Device())
		if err != nil {
			t.Fatalf("AddDevice: %v", err)
		}
		seen, err := bob1.AwaitVisible(ctx, subs...)
		if err != nil {
			t.Fatalf("AwaitVisible: %v", err)
		}
		if len(seen) != 1 || seen[0].Version != subs[0].Version || seen[0].Epoch.Record.LogSize <= subs[0].LogIndex {
			t.Fatalf("AwaitVisible of version %d at index %d returned %+v", subs[0].Version, subs[0].LogIndex, seen)
		}
		last = subs[0]
	}
	if last.Version != 3 {
		t.Fatalf("second change at version %d, want 3", last.Version)
	}

	other := *last
	other.Record = append([]byte(nil), last.Record...)
	other.Record[len(other.Record)-1] ^= 1
	if _, err := bob1.AwaitVisible(ctx, &other); !errors.Is(err, client.ErrNotVisible) {
		t.Errorf("another record at the visible version: %v, want ErrNotVisible", err)
	}

	future := *last
	future.Version++
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := bob1.AwaitVisible(short, &future); !errors.Is(err, client.ErrNotVisible) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a version lookups never reach: %v, want ErrNotVisible and the deadline", err)
	}
}

// TestChangeBeforeEnrollmentVisible: a change made right after an
// enrollment, before lookups show it, fails with ErrNotOwnDevice saying
// that the registration was accepted but is not visible yet; after the
// wait it succeeds.
func TestChangeBeforeEnrollmentVisible(t *testing.T) {
	e := newNetEnvWith(t, newNetKeys(t), 5*time.Second)
	ctx := t.Context()
	c, nc := e.device(client.Config{}), e.device(client.Config{})
	// Epochs close every netEpoch (100 ms): the change is made well
	// before the enrollment's epoch closes, or the test skips.
	s, err := c.Enroll(ctx, "late@example.com", e.token.IssueToken("mailto:late@example.com"), false)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := nc.State(ctx)
	_, err = c.AddDevice(ctx, st.Device.Device())
	if err == nil {
		t.Skip("the enrollment became visible before the change was made")
	}
	if !errors.Is(err, client.ErrNotOwnDevice) || !strings.Contains(err.Error(), "not registered yet") || !strings.Contains(err.Error(), "next epoch") {
		t.Fatalf("change before the enrollment is visible: %v", err)
	}
	if _, err := c.AwaitVisible(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddDevice(ctx, st.Device.Device()); err != nil {
		t.Fatalf("after the wait: %v", err)
	}
}
