package attacks

import (
	"testing"

	"google.golang.org/grpc/codes"
)

// TestA12Harvest: a caller that reads every VRF index from the log and
// asks the public gRPC API for each index's history gets no device set,
// opening or key of any handle it did not name: every full Monitor
// request (unsigned, signed by its own key, claiming a device key from
// the log) is refused with Unauthenticated or PermissionDenied, and its
// records-only answers carry only what the log shows. The control (run
// first) is the owner's own signed monitoring, which keeps working after
// the harvest.
func TestA12Harvest(t *testing.T) {
	r := run(t, "A12")
	d := detections(t, r, ByDirectory)[0]
	refusals, ok := d.Detail.([]HarvestRefusal)
	if !ok || len(refusals) == 0 {
		t.Fatalf("no refusals recorded: %+v", d)
	}
	seen := map[codes.Code]bool{}
	for _, f := range refusals {
		seen[f.Code] = true
		if f.Code != codes.Unauthenticated && f.Code != codes.PermissionDenied {
			t.Errorf("%s: %v, want Unauthenticated or PermissionDenied", f.Request, f.Code)
		}
	}
	// An unsigned or badly signed request is unauthenticated; a valid
	// signature by a key that is not an authorizer is denied.
	if !seen[codes.Unauthenticated] || !seen[codes.PermissionDenied] {
		t.Errorf("codes seen %v, want both Unauthenticated and PermissionDenied", seen)
	}
	if len(r.Notes) == 0 {
		t.Error("no note that the owner's monitoring still works")
	}
}
