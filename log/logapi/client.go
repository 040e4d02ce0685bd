package logapi

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/keytrans/kt/log"
)

// Client reads a log over the read API served by [NewHandler]. It
// implements [log.Reader]. Its methods are safe for concurrent use.
//
// Responses are parsed strictly: bodies are bounded, proofs must have
// exactly the length RFC 6962 gives for their parameters, entry framing must
// be consumed exactly. Violations are reported as [ErrMalformed]. Error
// responses become the [log] package's sentinel errors, wrapped in
// [*HTTPError], so that errors.Is works across the network as it does
// against a backend. The Client does not verify checkpoints or proofs:
// that is the caller's job, with the log's key and its trusted state.
type Client struct {
	base string
	hc   *http.Client
}

var _ log.Reader = (*Client)(nil)

// NewClient returns a client for the read API at baseURL (the URL that
// /log/v1/... is appended to, such as "https://kt.example.com"). hc carries
// the transport and timeouts; nil means [http.DefaultClient], whose
// requests are bounded only by the context.
func NewClient(baseURL string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: hc}
}

// HTTPError is an error response from the server.
type HTTPError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the Kt-Log-Error header, empty when the response did not come
	// from a read API handler (a proxy, a wrong URL).
	Code string
	// Message is the server's message, sanitized and truncated.
	Message string
	// RetryAfter is the server's Retry-After, zero when absent.
	RetryAfter time.Duration

	sentinel error
}

func (e *HTTPError) Error() string {
	var b strings.Builder
	if e.sentinel != nil {
		b.WriteString(e.sentinel.Error())
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "HTTP %d", e.Status)
	if e.Code != "" {
		fmt.Fprintf(&b, " (%s)", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": server says %q", e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, "; retry after %v", e.RetryAfter)
	}
	return b.String()
}

// Unwrap returns the [log] sentinel error the response stands for, if any:
// [log.ErrOutOfRange], [log.ErrNoCheckpoint] or [log.ErrPushback].
func (e *HTTPError) Unwrap() error { return e.sentinel }

// Checkpoint returns the latest checkpoint, unverified.
//
// SPEC(design.md 10)
func (c *Client) Checkpoint(ctx context.Context) ([]byte, error) {
	body, err := c.get(ctx, PathCheckpoint, "", MaxCheckpointSize, "text/plain")
	if err != nil {
		return nil, err
	}
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: empty checkpoint", ErrMalformed)
	}
	return body, nil
}

// Entries returns entries from [start, end): at least one, at most
// [MaxEntriesPerRequest] (fewer if the server pages smaller).
//
// SPEC(design.md 10)
func (c *Client) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	if start >= end {
		return nil, log.Errorf(log.ErrOutOfRange, "empty or inverted range [%d, %d)", start, end)
	}
	// The server checks the whole range against its checkpoint, and returns
	// a page of at most MaxEntriesPerRequest entries.
	n := min(end-start, MaxEntriesPerRequest)
	q := "start=" + strconv.FormatUint(start, 10) + "&end=" + strconv.FormatUint(end, 10)
	body, err := c.get(ctx, PathEntries, q, int64(n)*(2+log.MaxEntrySize), "application/octet-stream")
	if err != nil {
		return nil, err
	}
	entries, err := ParseEntries(body)
	if err != nil {
		return nil, fmt.Errorf("entries [%d, %d): %w", start, end, err)
	}
	if len(entries) == 0 || uint64(len(entries)) > n {
		return nil, fmt.Errorf("%w: %d entries for [%d, %d)", ErrMalformed, len(entries), start, end)
	}
	return entries, nil
}

// InclusionProof returns the inclusion proof for index in the tree of the
// given size, unverified but of the right length.
//
// SPEC(design.md 10)
func (c *Client) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	if index >= size {
		return nil, log.Errorf(log.ErrOutOfRange, "index %d not below size %d", index, size)
	}
	want, err := InclusionProofSize(index, size)
	if err != nil {
		return nil, err
	}
	q := "index=" + strconv.FormatUint(index, 10) + "&size=" + strconv.FormatUint(size, 10)
	return c.proof(ctx, PathInclusion, q, want)
}

// ConsistencyProof returns the consistency proof between the trees of sizes
// oldSize and newSize, unverified but of the right length.
//
// SPEC(design.md 10)
func (c *Client) ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	if oldSize == 0 || oldSize > newSize {
		return nil, log.Errorf(log.ErrOutOfRange, "consistency from size %d to %d", oldSize, newSize)
	}
	want, err := ConsistencyProofSize(oldSize, newSize)
	if err != nil {
		return nil, err
	}
	q := "old=" + strconv.FormatUint(oldSize, 10) + "&new=" + strconv.FormatUint(newSize, 10)
	return c.proof(ctx, PathConsistency, q, want)
}

func (c *Client) proof(ctx context.Context, path, query string, want int) ([][]byte, error) {
	body, err := c.get(ctx, path, query, int64(want)*HashSize, "application/octet-stream")
	if err != nil {
		return nil, err
	}
	p, err := ParseHashes(body)
	if err != nil {
		return nil, fmt.Errorf("%s?%s: %w", path, query, err)
	}
	if len(p) != want {
		return nil, fmt.Errorf("%w: %s?%s: proof has %d hashes, want %d", ErrMalformed, path, query, len(p), want)
	}
	return p, nil
}

// maxErrorBody bounds what is read of an error response.
const maxErrorBody = 1 << 10

// get fetches path?query and returns a 200 body of the given media type and
// at most limit bytes.
func (c *Client) get(ctx context.Context, path, query string, limit int64, mediaType string) ([]byte, error) {
	u := c.base + path
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("log read API: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("log read API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %w", u, responseError(resp))
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != mediaType {
		return nil, fmt.Errorf("%w: GET %s: Content-Type %q, want %s", ErrMalformed, u, resp.Header.Get("Content-Type"), mediaType)
	}
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%w: GET %s: body of %d bytes, more than the limit of %d", ErrMalformed, u, resp.ContentLength, limit)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading body: %w", u, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: GET %s: body longer than the limit of %d bytes", ErrMalformed, u, limit)
	}
	return body, nil
}

// responseError turns an error response back into the log package's
// sentinel error: the inverse of the handler's writeError.
//
// SPEC(design.md 10)
func responseError(resp *http.Response) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &HTTPError{
		Status:  resp.StatusCode,
		Code:    resp.Header.Get(HeaderError),
		Message: sanitize(string(msg)),
	}
	if s, err := strconv.ParseUint(resp.Header.Get("Retry-After"), 10, 32); err == nil {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	// A code counts only with the status the handler sends with it.
	switch {
	case e.Code == errCodeOutOfRange && e.Status == http.StatusNotFound:
		e.sentinel = log.ErrOutOfRange
	case e.Code == errCodeNoCheckpoint && e.Status == http.StatusServiceUnavailable:
		e.sentinel = log.ErrNoCheckpoint
	case e.Code == errCodePushback && e.Status == http.StatusServiceUnavailable,
		// Overload from anything in front of the server.
		e.Code == "" && (e.Status == http.StatusServiceUnavailable || e.Status == http.StatusTooManyRequests):
		e.sentinel = log.ErrPushback
	}
	return e
}

// sanitize keeps an untrusted message printable and on one line.
func sanitize(s string) string {
	s = strings.TrimSpace(s)
	s = strings.Map(func(r rune) rune {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
	const max = 200
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}
