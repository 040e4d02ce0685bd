package directory

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/internal/testing/testkit"
)

// domainError reports whether err is one of the directory's domain errors,
// the only errors a request may produce (the gRPC edge maps each to a
// client-side code; anything else would be Internal).
func domainError(err error) bool {
	for _, k := range []error{ErrInvalidArgument, ErrUnauthorized, ErrUnauthenticated, ErrStaleVersion, ErrNotFound, ErrOutOfRange, ErrResourceExhausted} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// FuzzRequests feeds arbitrary request bodies (protobuf-decoded, as the
// gRPC edge would) to every method of the Directory service of one running
// directory. Each must answer or fail with a domain error, a failed change
// must store nothing (the handle's state is unchanged), and the directory
// must keep serving (design.md A10).
func FuzzRequests(f *testing.F) {
	e := newEnv(f, backends[0])
	var account [16]byte
	rand.Read(account[:])
	alice := newHandle(f, e.k, "alice@example.com")
	a := testkit.NewDevice()
	enroll := alice.change(api.AuthEnroll, a.Sign, testkit.Set(account, a), nil)
	i := e.enroll(alice, a.Sign, testkit.Set(account, a))
	e.waitEpoch(i)
	next := alice.change(api.AuthDevice, a.Sign, testkit.Set(account, a, testkit.NewDevice()), nil)

	seed := func(method byte, m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(method, b)
	}
	seed(0, &ktpb.LookupRequest{Handle: alice.handle})
	seed(0, &ktpb.LookupRequest{Handle: "+1 415 555 0100", KnownSize: 1 << 40})
	seed(1, &ktpb.BatchLookupRequest{Handles: []string{alice.handle, "bob@example.com", "not a handle"}})
	seed(2, &ktpb.MonitorRequest{Index: alice.index[:], KnownVersion: 7})
	seed(2, &ktpb.MonitorRequest{Index: alice.index[:], RecordsOnly: true})
	seed(2, signedMonitor(&ktpb.MonitorRequest{Index: alice.index[:]}, a.Sign, time.Now()))
	seed(3, &ktpb.GetEpochRequest{})
	seed(4, &ktpb.EnrollRequest{Change: enroll, Credential: e.k.token.IssueToken(alice.handle)}) // a replay
	seed(5, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{next}})
	seed(5, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{next, next}})
	seed(6, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{{Handle: alice.handle, ChangeRecord: enroll.ChangeRecord[:50]}}})

	f.Fuzz(func(t *testing.T, method byte, body []byte) {
		ctx := ctxT(t)
		before, _, err := e.d.st.head(alice.index)
		if err != nil {
			t.Fatal(err)
		}
		var call func() error
		switch method % 7 {
		case 0:
			var r ktpb.LookupRequest
			if proto.Unmarshal(body, &r) != nil {
				return
			}
			call = func() error { _, err := e.d.Lookup(ctx, &r); return err }
		case 1:
			var r ktpb.BatchLookupRequest
			if proto.Unmarshal(body, &r) != nil {
				return
			}
			call = func() error { _, err := e.d.BatchLookup(ctx, &r); return err }
		case 2:
			var r ktpb.MonitorRequest
			if proto.Unmarshal(body, &r) != nil {
				return
			}
			call = func() error { _, err := e.d.Monitor(ctx, &r); return err }
		case 3:
			var r ktpb.GetEpochRequest
			if proto.Unmarshal(body, &r) != nil {
				return
			}
			call = func() error { _, err := e.d.GetEpoch(ctx, &r); return err }
		case 4:
			var r ktpb.EnrollRequest
			if proto.Unmarshal(body, &r) != nil {
				return
			}
			call = func() error { _, err := e.d.Enroll(ctx, &r); return err }
		default:
			var r ktpb.ChangeRequest
			if proto.Unmarshal(body, &r) != nil {
				return
			}
			call = func() error { _, err := e.d.Change(ctx, &r); return err }
		}
		err = call()
		if err != nil && !domainError(err) {
			t.Fatalf("method %d: %v is not a domain error", method%7, err)
		}
		if err != nil {
			after, _, serr := e.d.st.head(alice.index)
			if serr != nil {
				t.Fatal(serr)
			}
			if !bytes.Equal(encodeHead(after), encodeHead(before)) {
				t.Fatalf("method %d failed (%v) but alice's state changed", method%7, err)
			}
		}
		if _, err := e.d.GetEpoch(ctx, &ktpb.GetEpochRequest{}); err != nil {
			t.Fatalf("the directory stopped answering: %v", err)
		}
	})
}
