package auditor_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/internal/testing/ktlog"
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

// FuzzAudit posts each input to POST /kt/v1/audit of an auditor with an
// audit key that audited its log: the answer is a status of design.md
// 14.2, never a server error; a 200 is one signature line and nothing but
// a 409 (evidence) changes the store.
func FuzzAudit(f *testing.F) {
	l := newTestLog(f)
	b := ktlog.New(origin)
	b.Honest(3, 2)
	small := l.sizedCheckpointAfter(f, b)
	b.Honest(2, 2)
	cp := l.sizedCheckpointAfter(f, b)
	n := newNode(f, "auditor.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}, auditKey: auditKey(f, "auditor.example"), auditWait: time.Millisecond})
	if err := n.a.AuditOnce(context.Background(), origin); err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{string(cp), string(small), origin + "\n1\n", "", "\n\n", string(cp) + "— x AAAA\n"} {
		f.Add([]byte(s))
	}
	allowed := map[int]bool{200: true, 400: true, 403: true, 404: true, 409: true, 413: true, 503: true}
	h := n.a.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		before, _ := n.store.Count()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, auditor.PathAudit, bytes.NewReader(body)))
		if !allowed[rec.Code] {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
		if rec.Code == http.StatusOK && (!bytes.HasPrefix(rec.Body.Bytes(), []byte("— ")) || bytes.Count(rec.Body.Bytes(), []byte("\n")) != 1) {
			t.Fatalf("200 with %q", rec.Body)
		}
		if after, _ := n.store.Count(); after != before && rec.Code != http.StatusConflict {
			t.Fatalf("status %d stored something", rec.Code)
		}
	})
}
