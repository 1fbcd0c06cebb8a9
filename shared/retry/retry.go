// Package retry is bulkfhir's one retry policy. It says which HTTP answers
// are worth another try (RetryableStatus), how long a server asks to wait
// (After, the Retry-After header), how long to back off (Policy: exponential
// with full jitter), and holds the numbers of the export state machine's
// Retry fields (Step, LambdaService, MarkFailed), which the local runner
// applies too and which a test checks against the definition in infra/.
//
// The REST source (shared/fhirsource), the client (shared/bulkclient) and
// the local runner (shared/localrunner) use it. It imports only the
// standard library.
package retry

import (
	"context"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RetryableStatus reports the HTTP statuses a retry may fix: 408 Request
// Timeout, 429 Too Many Requests, 500, 502, 503 and 504.
func RetryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// After reads a Retry-After value (RFC 9110 §10.2.3): delay-seconds or an
// HTTP-date, relative to now. The wait is capped at limit (when limit > 0);
// a date in the past is a wait of 0. ok is false when v is empty or is
// neither form (a fraction, a negative number, text), so the caller falls
// back to its own backoff.
func After(v string, now time.Time, limit time.Duration) (wait time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case err != nil || n > math.MaxInt64/int64(time.Second):
			wait = time.Duration(math.MaxInt64) // beyond any cap
		default:
			wait = time.Duration(n) * time.Second
		}
	} else if t, err := http.ParseTime(v); err == nil {
		wait = max(t.Sub(now), 0)
	} else {
		return 0, false
	}
	if limit > 0 {
		wait = min(wait, limit)
	}
	return wait, true
}

// Asked is the wait a response asks for before the next try: Retry-After
// (After), or the reset of an exhausted rate limit (the IETF RateLimit
// header, draft-07 "reset=N" and draft-08 and later "t=N"; RateLimit-Reset;
// X-RateLimit-Reset, in seconds or, when the number is that large, a Unix
// time), the longest if several. ok is false when it asks for none (Medplum's
// 429 has rate-limit headers and no Retry-After).
func Asked(h http.Header, now time.Time) (wait time.Duration, ok bool) {
	if h == nil {
		return 0, false
	}
	wait, ok = After(h.Get("Retry-After"), now, 0)
	secs := func(v string) {
		n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || n < 0 || math.IsInf(n, 0) || math.IsNaN(n) {
			return
		}
		d := time.Duration(math.MaxInt64) // beyond any cap
		switch {
		case n > 1e9 && n < 1e11: // a Unix time
			d = max(time.Unix(int64(n), 0).Sub(now), 0)
		case n <= 1e9:
			d = time.Duration(n * float64(time.Second))
		}
		wait, ok = max(wait, d), true
	}
	for _, v := range h.Values("RateLimit") {
		for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ';' }) {
			k, val, found := strings.Cut(strings.TrimSpace(part), "=")
			if found && (k == "reset" || k == "t") {
				secs(val)
			}
		}
	}
	for _, name := range []string{"RateLimit-Reset", "X-RateLimit-Reset"} {
		if v := h.Get(name); v != "" {
			secs(v)
		}
	}
	return wait, ok
}

// Wait is the one rule by which bulkfhir's HTTP clients (the REST source,
// shared/fhirsource, and the client, shared/bulkclient) wait before trying
// again after a response with header h (nil after a transport error): a
// wait the server asks for (Asked) is honoured as given, neither lengthened
// by our backoff nor jittered (the server chose it, and may be spreading
// its clients itself); without one, own, our backoff (jittered by its
// Policy). Either is capped at limit (when > 0), so a server cannot stall
// a client for longer than it allows.
func Wait(h http.Header, now time.Time, own, limit time.Duration) time.Duration {
	wait := own
	if asked, ok := Asked(h, now); ok {
		wait = asked
	}
	if limit > 0 {
		wait = min(wait, limit)
	}
	return wait
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// Policy is exponential backoff, the shape of a Step Functions retrier:
// retry n (counting from 0) waits up to Interval·BackoffRate^n, capped at
// MaxDelay, and with full jitter a uniformly random part of that.
type Policy struct {
	// Interval is the first retry's wait (its ceiling with Jitter);
	// Step Functions' IntervalSeconds.
	Interval time.Duration
	// BackoffRate multiplies the ceiling on each retry (values below 1
	// count as 1).
	BackoffRate float64
	// MaxAttempts is how many retries follow the first try: Step
	// Functions' MaxAttempts.
	MaxAttempts int
	// MaxDelay caps one wait; 0 is no cap (MaxDelaySeconds unset).
	MaxDelay time.Duration
	// Jitter draws each wait uniformly from [0, ceiling] ("full jitter",
	// JitterStrategy FULL), so clients that failed together do not
	// retry together.
	Jitter bool
}

// The export state machine's retriers (infra/statemachine/export.asl.json;
// TestStateMachineUsesThePolicies checks every Retry field there against
// these). The local runner retries a step with Step.
var (
	// Step retries a task that returned a RetryableError, and the
	// Distributed Map's ItemReader and ResultWriter failures.
	Step = Policy{Interval: 2 * time.Second, BackoffRate: 2, MaxAttempts: 4, Jitter: true}
	// LambdaService retries the Lambda service's own failures
	// (throttling, a sandbox timeout) before the task's code ran.
	LambdaService = Policy{Interval: 2 * time.Second, BackoffRate: 2, MaxAttempts: 6, Jitter: true}
	// MarkFailed retries recording a failure on any error: the job must
	// not stay live.
	MarkFailed = Policy{Interval: 2 * time.Second, BackoffRate: 2, MaxAttempts: 8, Jitter: true}
)

// Ceiling is the longest wait before retry n (0 is the first retry).
func (p Policy) Ceiling(n int) time.Duration {
	rate := max(p.BackoffRate, 1)
	d := float64(p.Interval) * math.Pow(rate, float64(max(n, 0)))
	if p.MaxDelay > 0 && d > float64(p.MaxDelay) {
		return p.MaxDelay
	}
	if d >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(d)
}

// Delay is the wait before retry n: the ceiling, or with Jitter a uniformly
// random duration in [0, ceiling].
func (p Policy) Delay(n int) time.Duration {
	c := p.Ceiling(n)
	if !p.Jitter || c <= 0 {
		return c
	}
	if c == time.Duration(math.MaxInt64) {
		return time.Duration(rand.Int64N(int64(c)))
	}
	return time.Duration(rand.Int64N(int64(c) + 1))
}

// Do calls fn until it succeeds, returns an error retryable does not accept,
// the retries run out or ctx ends (then ctx's error). It waits p.Delay
// between tries.
func Do[T any](ctx context.Context, p Policy, retryable func(error) bool, fn func() (T, error)) (T, error) {
	for n := 0; ; n++ {
		v, err := fn()
		if err == nil || !retryable(err) || n >= p.MaxAttempts || ctx.Err() != nil {
			return v, err
		}
		if err := Sleep(ctx, p.Delay(n)); err != nil {
			return v, err
		}
	}
}

// Sleep waits d or until ctx ends (then its error).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
