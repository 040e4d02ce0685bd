package evidence

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// PathGossip is the auditors' gossip endpoint (design.md 15): it takes a
// checkpoint note or a bundle.
const PathGossip = "/kt/v1/gossip"

// Post sends body, a checkpoint note or a bundle, to the gossip endpoint
// of the auditor at base (its base URL) with hc, and returns the HTTP
// status and the answer: the auditor's checkpoint (200), a bundle (409) or
// an error text. An answer longer than [MaxSize], which bounds both a
// bundle and a checkpoint, is an error. Post does not interpret the
// answer; clients and auditors check it each by their own rules.
//
// SPEC(design.md 15): "accept POST /kt/v1/gossip (body: a checkpoint
// note)"; "The body may also be an evidence bundle".
func Post(ctx context.Context, hc *http.Client, base string, body []byte) (int, []byte, error) {
	url := strings.TrimSuffix(base, "/") + PathGossip
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	ans, err := io.ReadAll(io.LimitReader(resp.Body, int64(MaxSize)+1))
	if err != nil {
		return 0, nil, fmt.Errorf("reading the answer: %w", err)
	}
	if len(ans) > MaxSize {
		return 0, nil, fmt.Errorf("answer larger than %d bytes", MaxSize)
	}
	return resp.StatusCode, ans, nil
}
