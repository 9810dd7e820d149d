package fordeler

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/os2sandbox/connector/publish/render"
)

// ContentTypeBatch is the content type of a CloudEvents JSON batch.
const ContentTypeBatch = "application/cloudevents-batch+json"

// maxRetryAfter bounds how long a Retry-After may hold deliveries back.
const maxRetryAfter = 10 * time.Minute

// httpTransport POSTs events to an HTTP endpoint.
type httpTransport struct {
	r      *Receiver
	client *http.Client
	// notBefore is when the server, by Retry-After, wants the next
	// request at the earliest.
	notBefore time.Time
	now       func() time.Time
}

func newHTTPTransport(r *Receiver, tc *tls.Config) *httpTransport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.ResponseHeaderTimeout = r.s.Timeout
	return &httpTransport{r: r, now: time.Now, client: &http.Client{
		Transport: tr,
		// A redirect is answered, not followed: events go where the
		// configuration says, and credentials stay with that host.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (t *httpTransport) close() error {
	t.client.CloseIdleConnections()
	return nil
}

func (t *httpTransport) deliver(ctx context.Context, msgs []message) (int, error) {
	if err := t.waitRetryAfter(ctx); err != nil {
		return 0, err
	}
	if t.r.s.mode == ModeBatch {
		return t.deliverBatches(ctx, msgs)
	}
	for i := range msgs {
		if err := t.post(ctx, msgs[i:i+1]); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

// waitRetryAfter waits until notBefore, or fails at once when ctx ends
// before.
func (t *httpTransport) waitRetryAfter(ctx context.Context) error {
	d := t.notBefore.Sub(t.now())
	if d <= 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && dl.Before(t.notBefore) {
		return fmt.Errorf("fordeler receiver %q: %s asked (Retry-After) for no request before %s; waiting", t.r.name, t.r.s.url.Redacted(), t.notBefore.Format(time.RFC3339))
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// deliverBatches posts msgs as JSON batches of at most max_batch_bytes.
// When the server refuses a batch for good, its events are posted one by
// one to find the event it refuses.
func (t *httpTransport) deliverBatches(ctx context.Context, msgs []message) (int, error) {
	limit := t.r.s.HTTP.MaxBatchBytes
	for start := 0; start < len(msgs); {
		end, size := start, 2
		for end < len(msgs) && (end == start || size+len(msgs[end].body)+1 <= limit) {
			size += len(msgs[end].body) + 1
			end++
		}
		err := t.post(ctx, msgs[start:end])
		if _, refused := err.(*rejection); refused && end-start > 1 {
			for i := start; i < end; i++ {
				if err := t.post(ctx, msgs[i:i+1]); err != nil {
					return i, err
				}
			}
			return end, fmt.Errorf("fordeler receiver %q: %s refused a batch of %d events but took each alone: %w", t.r.name, t.r.s.url.Redacted(), end-start, err)
		}
		if err != nil {
			return start, err
		}
		start = end
	}
	return len(msgs), nil
}

// post sends msgs in one request (one message, or a batch).
func (t *httpTransport) post(ctx context.Context, msgs []message) error {
	h := t.r.s.HTTP
	var body []byte
	contentType := msgs[0].contentType
	if t.r.s.mode == ModeBatch {
		body = append(body, '[')
		for i := range msgs {
			if i > 0 {
				body = append(body, ',')
			}
			body = append(body, msgs[i].body...)
		}
		body = append(body, ']')
		contentType = ContentTypeBatch
	} else {
		body = msgs[0].body
	}
	rctx, cancel := context.WithTimeout(ctx, t.r.s.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("fordeler receiver %q: %w", t.r.name, err)
	}
	t.authorize(req)
	if contentType == render.ContentTypeXML {
		contentType += "; charset=utf-8"
	}
	req.Header.Set("Content-Type", contentType)
	key := msgs[0].eventID
	if len(msgs) > 1 {
		key += "+" + strconv.Itoa(len(msgs)-1)
	}
	req.Header.Set("Idempotency-Key", key)
	for _, a := range msgs[0].headers {
		if len(msgs) == 1 && a.Name != "content-type" {
			req.Header.Set(a.Name, a.Value)
		}
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return t.r.explain("POST "+t.r.s.url.Redacted(), err)
	}
	defer resp.Body.Close()
	excerpt := readExcerpt(resp.Body)
	code := resp.StatusCode
	what := fmt.Sprintf("%s answered %s", t.r.s.url.Redacted(), resp.Status)
	switch {
	case code >= 200 && code < 300:
		return nil
	case code >= 300 && code < 400:
		return fmt.Errorf("fordeler receiver %q: %s%s; redirects are not followed: set http.url to %q if that is where events belong", t.r.name, what, excerpt, resp.Header.Get("Location"))
	case code == 408 || code == 425 || code == 429 || code >= 500:
		d, ok := retryAfter(resp.Header.Get("Retry-After"), t.now())
		if ok {
			t.notBefore = t.now().Add(min(d, maxRetryAfter))
			return fmt.Errorf("fordeler receiver %q: %s%s; retrying after %s (Retry-After)", t.r.name, what, excerpt, d)
		}
		return fmt.Errorf("fordeler receiver %q: %s%s; retrying", t.r.name, what, excerpt)
	case code == 401 || code == 403 || code == 407:
		return fmt.Errorf("fordeler receiver %q: %s%s; the server refuses the credentials: check http.bearer_token or http.username/password (or the client certificate); events wait until it accepts them", t.r.name, what, excerpt)
	case code == 404 || code == 405 || code == 410 || code == 421:
		return fmt.Errorf("fordeler receiver %q: %s%s; nothing takes POSTs at that URL: check http.url; events wait until it does", t.r.name, what, excerpt)
	}
	return &rejection{fmt.Errorf("fordeler receiver %q: %s%s; the event is refused for good and dead-lettered", t.r.name, what, excerpt)}
}

// authorize adds the configured credentials and headers.
func (t *httpTransport) authorize(req *http.Request) {
	h := t.r.s.HTTP
	for k, v := range h.Headers {
		req.Header.Set(k, v)
	}
	switch {
	case h.BearerToken != "":
		req.Header.Set("Authorization", "Bearer "+h.BearerToken)
	case h.Username != "":
		req.SetBasicAuth(h.Username, h.Password)
	}
}

// check sends an OPTIONS request: it proves the URL, TLS and the
// credentials without delivering anything.
func (t *httpTransport) check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodOptions, t.r.s.HTTP.URL, nil)
	if err != nil {
		return fmt.Errorf("fordeler receiver %q: %w", t.r.name, err)
	}
	t.authorize(req)
	resp, err := t.client.Do(req)
	if err != nil {
		return t.r.explain("OPTIONS "+t.r.s.url.Redacted(), err)
	}
	defer resp.Body.Close()
	excerpt := readExcerpt(resp.Body)
	switch c := resp.StatusCode; {
	case c == 401 || c == 403 || c == 407:
		return fmt.Errorf("fordeler receiver %q: %s answered %s%s; check http.bearer_token or http.username/password (or the client certificate)", t.r.name, t.r.s.url.Redacted(), resp.Status, excerpt)
	case c == 404 || c == 410:
		return fmt.Errorf("fordeler receiver %q: %s answered %s%s; check http.url", t.r.name, t.r.s.url.Redacted(), resp.Status, excerpt)
	case c >= 300 && c < 400:
		return fmt.Errorf("fordeler receiver %q: %s redirects (%s) to %q; redirects are not followed: set http.url to where events belong", t.r.name, t.r.s.url.Redacted(), resp.Status, resp.Header.Get("Location"))
	case c >= 500:
		return fmt.Errorf("fordeler receiver %q: %s answered %s%s; the server has a problem", t.r.name, t.r.s.url.Redacted(), resp.Status, excerpt)
	}
	return nil // 2xx, or a 4xx such as 405 for OPTIONS: it is there and let us in
}

// excerptBytes bounds the part of an answer quoted in errors.
const excerptBytes = 300

// readExcerpt returns the start of body as ": <text>", printable only; ""
// when empty. It drains a little more so the connection can be reused.
func readExcerpt(body io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(body, excerptBytes+1))
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	cut := len(b) > excerptBytes
	if cut {
		b = b[:excerptBytes]
	}
	s := strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(string(b), ""))
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	if cut {
		s += "…"
	}
	return ": " + strconv.Quote(s)
}

// retryAfter parses a Retry-After value: seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}
