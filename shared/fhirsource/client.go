package fhirsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/retry"
)

// Authorizer adds credentials to an upstream request. Invalidate drops a
// cached credential after the upstream answered 401, so the retry gets a
// fresh one.
type Authorizer interface {
	Authorize(ctx context.Context, req *http.Request, body []byte) error
	Invalidate()
}

// client talks to the upstream server: authentication, retries (shared/retry:
// exponential backoff with full jitter) on its retryable statuses (408, 429,
// 500, 502, 503, 504) and on transport errors,
// honouring the waits the upstream asks for (Retry-After, RateLimit,
// X-RateLimit-Reset). Retries stop after maxRetries attempts, when the
// retry budget is spent, or when the next wait would end past the
// context's deadline (a chunk then stops in time to keep its cursor).
//
// Credentials go only to the base URL's origin: a link elsewhere is
// refused (an *OriginError), or followed without credentials when
// crossOrigin is set.
type client struct {
	base        *url.URL
	http        *http.Client
	auth        Authorizer
	maxRetries  int
	backoff     time.Duration // first retry's upper bound
	maxBackoff  time.Duration // cap of one backoff wait
	maxWait     time.Duration // cap of one wait the upstream asks for
	budget      time.Duration // total time one request may spend retrying
	crossOrigin bool          // follow links to other origins, without credentials
	log         *slog.Logger
	stats       *retryStats
	// hold is when (Unix nanoseconds) the upstream last asked, with a 429,
	// to be left alone until: every request of the source waits for it,
	// not only the one refused, so pages in flight side by side slow down
	// together.
	hold *atomic.Int64
	// refused gates new requests while a request refused with 429 waits
	// to retry, so its retry goes first (pages in flight side by side
	// would otherwise take the upstream's next admissions before it).
	refused *gate
}

// gate lets requests through while nobody is inside.
type gate struct {
	mu   sync.Mutex
	n    int
	free chan struct{} // closed when n drops to 0
}

func (g *gate) enter() {
	g.mu.Lock()
	if g.n == 0 {
		g.free = make(chan struct{})
	}
	g.n++
	g.mu.Unlock()
}

func (g *gate) leave() {
	g.mu.Lock()
	if g.n--; g.n == 0 {
		close(g.free)
	}
	g.mu.Unlock()
}

// wait returns once nobody is inside (or ctx ends).
func (g *gate) wait(ctx context.Context) error {
	g.mu.Lock()
	if g.n == 0 {
		g.mu.Unlock()
		return nil
	}
	free := g.free
	g.mu.Unlock()
	select {
	case <-free:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// OriginError is a link to a server other than the configured upstream.
// Following it would send the upstream's credentials elsewhere.
type OriginError struct{ URL string }

func (e *OriginError) Error() string {
	return fmt.Sprintf("the upstream linked to %s, another origin than the configured FHIR base; it was not followed, so the upstream's credentials stay with the upstream", Redact(e.URL))
}

// StatusError is an upstream response that retrying will not fix.
type StatusError struct {
	URL    string
	Status int
	// Diagnostics is the upstream OperationOutcome's text, or the start of
	// its body.
	Diagnostics string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("upstream answered %d to GET %s", e.Status, Redact(e.URL))
	if e.Diagnostics != "" {
		msg += ": " + e.Diagnostics
	}
	return msg
}

// Permanent reports whether err is an upstream answer no retry will change.
func Permanent(err error) bool {
	var oe *OriginError
	if errors.As(err, &oe) {
		return true
	}
	var se *StatusError
	return errors.As(err, &se) && !retry.RetryableStatus(se.Status) &&
		se.Status != http.StatusUnauthorized && se.Status != http.StatusForbidden
}

// resolve makes ref (absolute, or relative to the base URL) absolute.
func (c *client) resolve(ref string) (string, error) {
	u, err := url.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("bad upstream link %q: %w", ref, err)
	}
	if u.IsAbs() {
		return u.String(), nil
	}
	// Relative links are relative to the service base, which ends in '/'.
	return c.base.ResolveReference(u).String(), nil
}

// get fetches an absolute URL; see do.
func (c *client) get(ctx context.Context, u string) (*http.Response, error) {
	return c.do(ctx, http.MethodGet, u, nil)
}

// search POSTs a form to [base]/[type]/_search.
func (c *client) search(ctx context.Context, typ string, form url.Values) (*http.Response, error) {
	u, err := c.resolve(typ + "/_search")
	if err != nil {
		return nil, err
	}
	return c.do(ctx, http.MethodPost, u, []byte(form.Encode()))
}

// do sends one request with retries. A 2xx response is returned with its
// body open; anything else is an error (a *StatusError for an answer that
// retrying will not change).
func (c *client) do(ctx context.Context, method, u string, body []byte) (*http.Response, error) {
	refreshed := false
	started := time.Now()
	inside := false // in c.refused, retrying after a 429
	defer func() {
		if inside {
			c.refused.leave()
		}
	}()
	for attempt := 0; ; attempt++ {
		if attempt == 0 && c.refused != nil {
			if err := c.refused.wait(ctx); err != nil {
				return nil, err
			}
		}
		if err := c.waitHold(ctx); err != nil {
			return nil, err
		}
		resp, err := c.once(ctx, method, u, body)
		if inside {
			inside = false
			c.refused.leave()
		}
		if err == nil && resp.StatusCode < 300 {
			return resp, nil
		}
		// A transport error names the URL; from here on it travels as
		// step errors into logs and the execution's history: redact it.
		err = redactURLError(err)
		if ctx.Err() != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return nil, ctx.Err()
		}
		var header http.Header // the answer's, for the wait it asks for
		if err == nil {
			status := resp.StatusCode
			diag := outcomeText(resp.Body)
			resp.Body.Close()
			if status == http.StatusUnauthorized && c.auth != nil && !refreshed {
				c.auth.Invalidate()
				refreshed = true
				attempt--
				continue
			}
			if !retry.RetryableStatus(status) {
				return nil, &StatusError{URL: u, Status: status, Diagnostics: diag}
			}
			err = &StatusError{URL: u, Status: status, Diagnostics: diag}
			header = resp.Header
		} else if !transientError(err) {
			return nil, err
		}
		if attempt >= c.maxRetries {
			return nil, fmt.Errorf("gave up after %d attempts: %w", attempt+1, err)
		}
		// What the upstream asks for (Retry-After, rate-limit resets) as
		// given, else our jittered backoff; at most maxWait (retry.Wait).
		wait := retry.Wait(header, time.Now(), c.policy().Delay(attempt), c.maxWait)
		if c.budget > 0 && time.Since(started)+wait > c.budget {
			return nil, fmt.Errorf("gave up after %d attempts in %v (the retry budget): %w", attempt+1, time.Since(started).Round(time.Second), err)
		}
		if stop, ok := export.StopTime(ctx); ok && time.Now().Add(wait).After(stop) {
			// The wait outlives the step: wait what is left and stop
			// without asking again, so the chunk commits and hands on its
			// cursor (and chunks do not hammer a throttled upstream).
			if err := retry.Sleep(ctx, time.Until(stop)); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("the upstream asks to wait %v, past this step's stop time: %w (%w)", wait, export.ErrOutOfTime, err)
		}
		if dl, ok := ctx.Deadline(); ok && time.Now().Add(wait).After(dl) {
			<-ctx.Done()
			return nil, fmt.Errorf("the upstream asks to wait %v, past the deadline: %w", wait, ctx.Err())
		}
		c.stats.retries.Add(1)
		var se *StatusError
		if errors.As(err, &se) && se.Status == http.StatusTooManyRequests {
			c.stats.throttled.Add(1)
			// Only a wait the upstream asked for holds the others.
			if asked, ok := retry.Asked(header, time.Now()); ok {
				c.holdFor(min(asked, wait))
			}
			if c.refused != nil {
				c.refused.enter()
				inside = true
			}
		}
		c.log.WarnContext(ctx, "upstream retry", "url", Redact(u), "attempt", attempt+1, "wait", wait.String(), "err", redactErr(err))
		if err := retry.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// holdFor makes every request of the source wait d from now (a 429's
// wait), unless a longer hold is set.
func (c *client) holdFor(d time.Duration) {
	if c.hold == nil || d <= 0 {
		return
	}
	until := time.Now().Add(d).UnixNano()
	for h := c.hold.Load(); h < until && !c.hold.CompareAndSwap(h, until); h = c.hold.Load() {
	}
}

// waitHold waits until the hold a 429 set has passed; a hold past the
// step's stop time stops the request then, as a wait in do does.
func (c *client) waitHold(ctx context.Context) error {
	if c.hold == nil {
		return nil
	}
	until := time.Unix(0, c.hold.Load())
	d := time.Until(until)
	if d <= 0 {
		return nil
	}
	if stop, ok := export.StopTime(ctx); ok && until.After(stop) {
		if err := retry.Sleep(ctx, time.Until(stop)); err != nil {
			return err
		}
		return fmt.Errorf("the upstream asked to be left alone until %s, past this step's stop time: %w", until.UTC().Format(time.RFC3339), export.ErrOutOfTime)
	}
	// A little later than the refused request's own retry, so that one
	// is not always the last to go (and refused again by an upstream that
	// admits so many requests per moment).
	return retry.Sleep(ctx, d+rand.N(d/4+time.Millisecond))
}

func (c *client) once(ctx context.Context, method, u string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/fhir+json")
	// An unknown or unsupported search parameter is an error rather
	// than silently ignored (which would return more than was asked).
	req.Header.Set("Prefer", "handling=strict")
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	sameOrigin := req.URL.Scheme == c.base.Scheme && req.URL.Host == c.base.Host
	if !sameOrigin && !c.crossOrigin {
		return nil, &OriginError{URL: u}
	}
	if c.auth != nil && sameOrigin {
		if err := c.auth.Authorize(ctx, req, body); err != nil {
			return nil, fmt.Errorf("authorize upstream request: %w", err)
		}
	}
	return c.http.Do(req)
}

// policy is the client's backoff: full jitter in [0, backoff·2^n], each
// wait capped at maxBackoff.
func (c *client) policy() retry.Policy {
	return retry.Policy{Interval: c.backoff, BackoffRate: 2, MaxAttempts: c.maxRetries, MaxDelay: c.maxBackoff, Jitter: true}
}

// transientError reports transport failures worth retrying: timeouts,
// refused or reset connections, a response cut short.
func transientError(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "connection refused")
}

// outcomeText reads the diagnostics of an error response: the
// OperationOutcome's issues, else the start of the body.
func outcomeText(body io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(body, 16<<10))
	if gjson.GetBytes(b, "resourceType").Str == "OperationOutcome" {
		var parts []string
		gjson.GetBytes(b, "issue").ForEach(func(_, is gjson.Result) bool {
			text := is.Get("diagnostics").Str
			if text == "" {
				text = is.Get("details.text").Str
			}
			if text != "" {
				parts = append(parts, text)
			}
			return true
		})
		if len(parts) > 0 {
			return strings.Join(parts, "; ")
		}
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
