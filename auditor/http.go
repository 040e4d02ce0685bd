package auditor

import (
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keytrans/kt/log/evidence"
)

// HTTP paths served by [Auditor.Handler].
const (
	// PathAddCheckpoint is C2SP tlog-witness add-checkpoint (the
	// submission prefix is the auditor's base URL).
	PathAddCheckpoint = "/add-checkpoint"
	// PathCheckpoint returns the latest audited checkpoint of the log
	// named by the origin query parameter (optional with a single log).
	PathCheckpoint = "/kt/v1/checkpoint"
	// PathAudit takes a checkpoint note of an audited log and answers
	// with the auditor's audit statement on it ([Auditor.Audit]).
	PathAudit = "/kt/v1/audit"
	// PathGossip takes a checkpoint note or an evidence bundle.
	PathGossip = evidence.PathGossip
	// PathEvidence lists the evidence bundles of a log (one id per line);
	// PathEvidence/<id> serves one.
	PathEvidence = "/kt/v1/evidence"
	// PathStatus is the HTML status page.
	PathStatus = "/"
)

// Handler returns the auditor's HTTP endpoints. Every request body is
// bounded by Config.MaxBodyBytes; errors map to statuses in one place
// (writeError).
func (a *Auditor) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathAddCheckpoint, a.serveAddCheckpoint)
	mux.HandleFunc("GET "+PathCheckpoint, a.serveCheckpoint)
	mux.HandleFunc("POST "+PathAudit, a.serveAudit)
	mux.HandleFunc("POST "+PathGossip, a.serveGossip)
	mux.HandleFunc("GET "+PathEvidence, a.serveEvidenceList)
	mux.HandleFunc("GET "+PathEvidence+"/{id}", a.serveEvidence)
	mux.HandleFunc("GET /{$}", a.serveStatus)
	return mux
}

// writeError maps domain errors to HTTP, the one switch of the edge.
func (a *Auditor) writeError(w http.ResponseWriter, err error) int {
	w.Header().Set("Cache-Control", "no-store")
	var ce *ConflictError
	var fe *ForkError
	status := http.StatusInternalServerError
	switch {
	case errors.As(err, &fe):
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusConflict)
		w.Write(fe.Bundle)
		return http.StatusConflict
	case errors.As(err, &ce):
		if ce.SizeKnown {
			// SPEC(tlog-witness): "The response body MUST consist of the
			// tree size of the latest cosigned checkpoint in decimal,
			// followed by a newline (U+000A). The response MUST have a
			// Content-Type of text/x.tlog.size."
			w.Header().Set("Content-Type", "text/x.tlog.size")
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(strconv.FormatUint(ce.Size, 10) + "\n"))
			return http.StatusConflict
		}
		status = http.StatusConflict
	case errors.Is(err, ErrUnknownLog), errors.Is(err, ErrNotAudited), errors.Is(err, ErrNoAuditKey):
		status = http.StatusNotFound
	case errors.Is(err, ErrTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrBadSignature), errors.Is(err, ErrFrozen), errors.Is(err, ErrViolation):
		status = http.StatusForbidden
	case errors.Is(err, ErrBadProof):
		status = http.StatusUnprocessableEntity
	case errors.Is(err, ErrMalformed):
		status = http.StatusBadRequest
	case errors.Is(err, ErrNotYetAudited), errors.Is(err, ErrNoView):
		w.Header().Set("Retry-After", "1")
		status = http.StatusServiceUnavailable
	}
	msg := err.Error()
	if status == http.StatusInternalServerError {
		a.log.Error("request failed", "err", err)
		msg = "internal error"
	}
	http.Error(w, msg, status)
	return status
}

// SPEC(design.md 14)
func (a *Auditor) serveAddCheckpoint(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r, a.cfg.MaxBodyBytes)
	var sigs []byte
	if err == nil {
		sigs, err = a.AddCheckpoint(r.Context(), body)
	}
	origin := ""
	if i := strings.Index(string(body), "\n\n"); i >= 0 {
		origin, _, _ = strings.Cut(string(body[i+2:]), "\n")
	}
	if _, known := a.logs[origin]; !known {
		origin = "unknown"
	}
	if err != nil {
		a.m.WitnessRequest(origin, a.writeError(w, err))
		return
	}
	a.m.WitnessRequest(origin, http.StatusOK)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(sigs)
}

// SPEC(design.md 14.2)
func (a *Auditor) serveAudit(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r, a.cfg.MaxBodyBytes)
	var line []byte
	if err == nil {
		line, err = a.Audit(r.Context(), body)
	}
	origin, _, _ := strings.Cut(string(body), "\n")
	if _, known := a.logs[origin]; !known {
		origin = "unknown"
	}
	if err != nil {
		a.m.AuditRequest(origin, a.writeError(w, err))
		return
	}
	a.m.AuditRequest(origin, http.StatusOK)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(line)
}

func (a *Auditor) originParam(r *http.Request) (string, error) {
	q := r.URL.Query()
	if vs, ok := q["origin"]; ok {
		if len(vs) != 1 || len(q) != 1 {
			return "", ErrMalformed
		}
		return vs[0], nil
	}
	if len(q) != 0 {
		return "", ErrMalformed
	}
	if len(a.order) == 1 {
		return a.order[0], nil
	}
	return "", ErrMalformed
}

// SPEC(design.md 15)
func (a *Auditor) serveCheckpoint(w http.ResponseWriter, r *http.Request) {
	origin, err := a.originParam(r)
	if err == nil {
		var cp []byte
		cp, err = a.Latest(origin)
		if err == nil {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "max-age=1")
			w.Write(cp)
			return
		}
	}
	a.writeError(w, err)
}

// SPEC(design.md 15)
func (a *Auditor) serveGossip(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r, a.cfg.MaxBodyBytes)
	if err == nil {
		var cp []byte
		cp, err = a.Gossip(r.Context(), body)
		if err == nil {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write(cp)
			return
		}
	}
	a.writeError(w, err)
}

// SPEC(design.md 15)
func (a *Auditor) serveEvidenceList(w http.ResponseWriter, r *http.Request) {
	origin, err := a.originParam(r)
	if err != nil {
		a.writeError(w, err)
		return
	}
	ls, ok := a.logs[origin]
	if !ok {
		a.writeError(w, ErrUnknownLog)
		return
	}
	ls.mu.Lock()
	ids := strings.Join(ls.evidence, "\n")
	ls.mu.Unlock()
	if ids != "" {
		ids += "\n"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(ids))
}

// SPEC(design.md 15)
func (a *Auditor) serveEvidence(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	for _, o := range a.order {
		b, err := a.cfg.Store.get(key(kindEvidence, o, []byte(id)))
		if err != nil {
			a.writeError(w, err)
			return
		}
		if b != nil {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
			w.Write(b)
			return
		}
	}
	http.Error(w, "no such evidence", http.StatusNotFound)
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"b64":  func(b [32]byte) string { return base64.StdEncoding.EncodeToString(b[:]) },
	"text": func(b []byte) string { return string(b) },
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<title>ktauditor</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #999;padding:.3em .6em;text-align:left}
.bad{color:#fff;background:#b00;padding:.2em .5em}.ok{color:#070}pre{background:#f4f4f4;padding:.5em}</style></head>
<body><h1>ktauditor</h1>
{{range .Logs}}<section class="log" data-origin="{{.Origin}}">
<h2>{{.Origin}}</h2>
{{if .Frozen}}<p class="bad" id="frozen">Cosigning stopped: {{.Frozen}}</p>{{end}}
{{if .Violations}}<p class="bad" id="violating">The log violates the protocol at entry {{.FirstViolation}}: no checkpoint beyond it is cosigned.</p>{{end}}
<table>
<tr><th>audited</th><td>{{if .Audited}}yes{{else}}no (witnessed only){{end}}</td></tr>
<tr><th>latest verified checkpoint</th><td class="latest">{{with .Latest}}size <span class="size">{{.Size}}</span>, root <code class="root">{{b64 .Root}}</code>{{else}}none yet{{end}}</td></tr>
<tr><th>latest clean checkpoint</th><td>{{with .Clean}}size {{.Size}}{{else}}none{{end}}</td></tr>
<tr><th>log size seen</th><td>{{.Target}}</td></tr>
<tr><th>entries replayed</th><td class="replayed">{{.Replayed}}</td></tr>
<tr><th>lag</th><td class="lag">{{.Lag}} entries</td></tr>
<tr><th>replay speed</th><td>{{printf "%.0f" .Rate}} entries/s</td></tr>
<tr><th>violations</th><td class="violations">{{if .Violations}}<span class="bad">{{.Violations}}</span>{{else}}<span class="ok">0</span>{{end}}</td></tr>
<tr><th>warnings</th><td>{{.Warnings}}</td></tr>
<tr><th>latest cosigned</th><td>{{if .HasCosigned}}size {{.Cosigned}}{{else}}none{{end}}</td></tr>
{{if .LastError}}<tr><th>last error</th><td>{{.LastError}}</td></tr>{{end}}
</table>
{{with .Latest}}<pre class="note">{{text .Note}}</pre>{{end}}
<h3>Evidence</h3>
{{if .Evidence}}<ul class="evidence">{{range .Evidence}}<li><a href="/kt/v1/evidence/{{.}}">{{.}}</a></li>{{end}}</ul>{{else}}<p class="noevidence">none</p>{{end}}
{{if .Found}}<h3>Violations</h3><table class="found"><tr><th>entry</th><th>rule</th><th>detail</th></tr>
{{range .Found}}<tr><td>{{.Index}}</td><td>{{.Rule}}</td><td>{{.Detail}}</td></tr>{{end}}</table>{{end}}
</section>{{end}}
<h2>Peers</h2>
{{if .Peers}}<table class="peers"><tr><th>peer</th><th>URL</th><th>last exchange</th><th>result</th></tr>
{{range .Peers}}<tr><td>{{.Name}}</td><td>{{.URL}}</td><td>{{ago .Last}}</td><td>{{.Result}}</td></tr>{{end}}</table>{{else}}<p>none configured</p>{{end}}
</body></html>
`))

type statusLog struct {
	LogStatus
	Found []Violation
}

func (a *Auditor) serveStatus(w http.ResponseWriter, r *http.Request) {
	var data struct {
		Logs  []statusLog
		Peers []PeerStatus
	}
	for _, s := range a.Status() {
		vs, err := a.Violations(s.Origin)
		if err != nil {
			a.writeError(w, err)
			return
		}
		data.Logs = append(data.Logs, statusLog{s, vs[:min(len(vs), 50)]})
	}
	data.Peers = a.Peers()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := statusPage.Execute(w, data); err != nil {
		a.log.Error("status page", "err", err)
	}
}
