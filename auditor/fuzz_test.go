package auditor_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/keytrans/kt/auditor"
)

// fuzzEndpoint posts each input to path and checks that the answer is one
// the protocol allows, never a server error, and that only a 200 (a
// cosignature) may change the store.
func fuzzEndpoint(f *testing.F, path string, allowed map[int]bool, seeds ...string) {
	fx := newWitnessFixture(f, 5)
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	h := fx.n.a.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		before, _ := fx.n.store.Count()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
		if !allowed[rec.Code] {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
		if after, _ := fx.n.store.Count(); after != before && rec.Code != http.StatusOK {
			t.Fatalf("status %d stored something", rec.Code)
		}
	})
}

func FuzzAddCheckpoint(f *testing.F) {
	fx := newWitnessFixture(f, 5)
	fuzzEndpoint(f, auditor.PathAddCheckpoint, map[int]bool{200: true, 400: true, 403: true, 404: true, 409: true, 413: true, 422: true},
		"old 0\n\n"+fx.cps[3], "old 3\n"+fx.proof(f, 3, 5)+"\n"+fx.cps[5], "old 0\n\n", "")
}

func FuzzGossip(f *testing.F) {
	fx := newWitnessFixture(f, 5)
	fuzzEndpoint(f, auditor.PathGossip, map[int]bool{200: true, 400: true, 404: true, 409: true, 413: true, 503: true},
		fx.cps[3], "kt-evidence/v1\ncheckpoint AAAA\n", "")
}
