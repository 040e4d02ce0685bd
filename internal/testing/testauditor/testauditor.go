// Package testauditor is a fake auditor for tests: an http.Handler serving
// POST /kt/v1/audit as docs/design.md 14.2 says an auditor does, without
// auditing anything. It answers 200 with one audit statement (a C2SP
// tlog-cosignature/v1 line by its audit key, made with
// formats/note.NewSignerForCosignatureV1) for every checkpoint whose log
// signature verifies and whose size is within its limit, and 503 with
// Retry-After beyond it. [Mode] makes it misbehave. The real auditor is
// package auditor.
package testauditor

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	fmtlog "github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// Path is the audit endpoint.
const Path = "/kt/v1/audit"

// Mode makes the auditor misbehave on 200 answers, or not answer.
type Mode string

const (
	ModeOK       Mode = ""         // one valid statement
	ModeHang     Mode = "hang"     // no answer until the request is cancelled or Close
	ModeCorrupt  Mode = "corrupt"  // a statement with a flipped bit
	ModeOtherKey Mode = "otherkey" // a statement by another key of the same name
	ModeTwoLines Mode = "twolines" // the statement twice
	ModeGarbage  Mode = "garbage"  // a body that is no signature line
)

// Auditor is the fake auditor. Its zero value is not usable; see New.
type Auditor struct {
	skey   string
	signer *fnote.Signer
	vkey   string

	logV    atomic.Pointer[note.Verifier]
	limit   atomic.Int64 // largest size vouched for; -1: none
	refuse  atomic.Int64 // 503 answers still to give, whatever the size
	status  atomic.Int64 // when not 0: every answer has this status
	mode    atomic.Pointer[Mode]
	release chan struct{}
	once    sync.Once

	mu       sync.Mutex
	statuses map[int]int
}

// New returns an auditor whose audit key is named name.
func New(name string) (*Auditor, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return nil, err
	}
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		return nil, err
	}
	cv, err := fnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		return nil, err
	}
	a := &Auditor{skey: skey, signer: s, vkey: cv, release: make(chan struct{}), statuses: make(map[int]int)}
	a.limit.Store(-1)
	a.SetMode(ModeOK)
	return a, nil
}

// VerifierKey is the audit key's cosignature/v1 verifier key, as an audit
// policy names it.
func (a *Auditor) VerifierKey() string { return a.vkey }

// SignerKey is the audit key's private key in signed-note form.
func (a *Auditor) SignerKey() string { return a.skey }

// Signer is the audit key's signer.
func (a *Auditor) Signer() note.Signer { return a.signer }

// SetLog sets the key of the log whose checkpoints it vouches for (a
// signed-note verifier). Until then it answers 403.
func (a *Auditor) SetLog(v note.Verifier) { a.logV.Store(&v) }

// SetLimit sets the largest checkpoint size it has "audited": beyond it,
// 503. Negative: no limit (the default).
func (a *Auditor) SetLimit(size int64) { a.limit.Store(size) }

// Refuse makes the next n answers 503, whatever the size.
func (a *Auditor) Refuse(n int) { a.refuse.Store(int64(n)) }

// SetStatus makes every answer status (0: back to normal).
func (a *Auditor) SetStatus(status int) { a.status.Store(int64(status)) }

// SetMode sets the mode.
func (a *Auditor) SetMode(m Mode) { a.mode.Store(&m) }

// Count is the number of answers with status given so far.
func (a *Auditor) Count(status int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.statuses[status]
}

// Close releases the requests ModeHang holds.
func (a *Auditor) Close() { a.once.Do(func() { close(a.release) }) }

// Statement is a note signature line by key on the note text.
func Statement(key note.Signer, text string) []byte {
	sig, err := key.Sign([]byte(text))
	if err != nil {
		panic(err)
	}
	keyed := binary.BigEndian.AppendUint32(nil, key.KeyHash())
	return fmt.Appendf(nil, "— %s %s\n", key.Name(), base64.StdEncoding.EncodeToString(append(keyed, sig...)))
}

func (a *Auditor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status, body := a.answer(w, r)
	a.mu.Lock()
	a.statuses[status]++
	a.mu.Unlock()
	if status == http.StatusOK {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.WriteHeader(status)
	w.Write(body)
}

func (a *Auditor) answer(w http.ResponseWriter, r *http.Request) (int, []byte) {
	if r.Method != http.MethodPost || r.URL.Path != Path {
		return http.StatusNotFound, nil
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		return http.StatusRequestEntityTooLarge, nil
	}
	if s := a.status.Load(); s != 0 {
		return int(s), []byte("refused\n")
	}
	vp := a.logV.Load()
	if vp == nil {
		return http.StatusForbidden, []byte("no log key\n")
	}
	n, err := note.Open(raw, note.VerifierList(*vp))
	if err != nil {
		return http.StatusForbidden, []byte("no valid log signature\n")
	}
	var cp fmtlog.Checkpoint
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		return http.StatusBadRequest, nil
	}
	mode := *a.mode.Load()
	if mode == ModeHang {
		select {
		case <-r.Context().Done():
		case <-a.release:
		}
		return http.StatusServiceUnavailable, nil
	}
	if a.refuse.Add(-1) >= 0 {
		w.Header().Set("Retry-After", "0")
		return http.StatusServiceUnavailable, []byte("not audited yet\n")
	}
	if l := a.limit.Load(); l >= 0 && cp.Size > uint64(l) {
		w.Header().Set("Retry-After", "0")
		return http.StatusServiceUnavailable, fmt.Appendf(nil, "audited up to %d\n", l)
	}
	line := Statement(a.signer, n.Text)
	switch mode {
	case ModeCorrupt:
		s := strings.TrimSuffix(string(line), "\n")
		b, _ := base64.StdEncoding.DecodeString(s[strings.LastIndexByte(s, ' ')+1:])
		b[len(b)-1] ^= 1
		line = fmt.Appendf(nil, "— %s %s\n", a.signer.Name(), base64.StdEncoding.EncodeToString(b))
	case ModeOtherKey:
		skey, _, _ := note.GenerateKey(rand.Reader, a.signer.Name())
		s, _ := fnote.NewSignerForCosignatureV1(skey)
		line = Statement(s, n.Text)
	case ModeTwoLines:
		line = append(line, line...)
	case ModeGarbage:
		line = []byte("vouched\n")
	}
	return http.StatusOK, line
}
