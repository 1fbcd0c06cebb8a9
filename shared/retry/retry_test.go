package retry

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestRetryableStatus(t *testing.T) {
	for code := 100; code < 600; code++ {
		want := false
		switch code {
		case 408, 429, 500, 502, 503, 504:
			want = true
		}
		if got := RetryableStatus(code); got != want {
			t.Errorf("RetryableStatus(%d) = %v, want %v", code, got, want)
		}
	}
}

func TestAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		v      string
		limit  time.Duration
		want   time.Duration
		wantOK bool
	}{
		{"absent", "", time.Minute, 0, false},
		{"seconds", "7", time.Minute, 7 * time.Second, true},
		{"zero", "0", time.Minute, 0, true},
		{"spaces", "  3 ", time.Minute, 3 * time.Second, true},
		{"seconds over the cap", "3600", time.Minute, time.Minute, true},
		{"no cap", "3600", 0, time.Hour, true},
		{"overflowing seconds are capped", "99999999999999999999999", time.Minute, time.Minute, true},
		{"HTTP-date", now.Add(90 * time.Second).Format(http.TimeFormat), time.Hour, 90 * time.Second, true},
		{"HTTP-date over the cap", now.Add(2 * time.Hour).Format(http.TimeFormat), time.Hour, time.Hour, true},
		{"HTTP-date in the past", now.Add(-time.Hour).Format(http.TimeFormat), time.Hour, 0, true},
		{"RFC 850 date", now.Add(time.Minute).Format("Monday, 02-Jan-06 15:04:05 GMT"), time.Hour, time.Minute, true},
		{"negative", "-5", time.Minute, 0, false},
		{"fraction", "1.5", time.Minute, 0, false},
		{"text", "soon", time.Minute, 0, false},
		{"sign", "+5", time.Minute, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := After(tc.v, now, tc.limit)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("After(%q, %v) = %v, %v; want %v, %v", tc.v, tc.limit, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestCeiling(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		n    int
		want time.Duration
	}{
		{"first retry is the interval", Step, 0, 2 * time.Second},
		{"doubles", Step, 1, 4 * time.Second},
		{"fourth retry", Step, 3, 16 * time.Second},
		{"capped", Policy{Interval: time.Second, BackoffRate: 2, MaxDelay: 5 * time.Second}, 10, 5 * time.Second},
		{"rate below 1 is constant", Policy{Interval: time.Second, BackoffRate: 0.5}, 4, time.Second},
		{"rate 1.5", Policy{Interval: time.Second, BackoffRate: 1.5}, 2, 2250 * time.Millisecond},
		{"negative n is the first", Step, -1, 2 * time.Second},
		{"no overflow", Policy{Interval: time.Hour, BackoffRate: 10}, 400, time.Duration(1<<63 - 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.Ceiling(tc.n); got != tc.want {
				t.Errorf("Ceiling(%d) = %v, want %v", tc.n, got, tc.want)
			}
		})
	}
}

// TestDelayFullJitter: with jitter every wait lies in [0, ceiling] and they
// spread over it (a constant wait, or one always at the ceiling, fails);
// without jitter the wait is the ceiling.
func TestDelayFullJitter(t *testing.T) {
	p := Policy{Interval: time.Second, BackoffRate: 2, Jitter: true}
	for n := range 4 {
		ceil := p.Ceiling(n)
		var low, high bool
		for range 2000 {
			d := p.Delay(n)
			if d < 0 || d > ceil {
				t.Fatalf("Delay(%d) = %v, outside [0, %v]", n, d, ceil)
			}
			low = low || d < ceil/4
			high = high || d > ceil*3/4
		}
		if !low || !high {
			t.Errorf("Delay(%d) over 2000 draws: below a quarter %v, above three quarters %v; want both (full jitter)", n, low, high)
		}
	}
	p.Jitter = false
	if got := p.Delay(2); got != 4*time.Second {
		t.Errorf("without jitter Delay(2) = %v, want 4s", got)
	}
}

func TestDo(t *testing.T) {
	errRetry, errFatal := errors.New("retry me"), errors.New("fatal")
	retryable := func(err error) bool { return errors.Is(err, errRetry) }
	fast := Policy{Interval: time.Microsecond, BackoffRate: 2, MaxAttempts: 3, Jitter: true}
	tests := []struct {
		name      string
		results   []error // one per call; the last repeats
		wantCalls int
		wantErr   error
	}{
		{"success", []error{nil}, 1, nil},
		{"success after retries", []error{errRetry, errRetry, nil}, 3, nil},
		{"fatal is not retried", []error{errFatal}, 1, errFatal},
		{"retries run out", []error{errRetry}, 4, errRetry},
		{"fatal after a retry", []error{errRetry, errFatal}, 2, errFatal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			v, err := Do(context.Background(), fast, retryable, func() (int, error) {
				err := tc.results[min(calls, len(tc.results)-1)]
				calls++
				return calls, err
			})
			if calls != tc.wantCalls || !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Errorf("calls %d, err %v; want %d, %v", calls, err, tc.wantCalls, tc.wantErr)
			}
			if v != calls {
				t.Errorf("value %d, want the last call's (%d)", v, calls)
			}
		})
	}
}

// TestDoStopsWithContext: a cancelled context ends the waiting at once.
func TestDoStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	_, err := Do(ctx, Policy{Interval: time.Hour, MaxAttempts: 5}, func(error) bool { return true }, func() (int, error) {
		calls++
		cancel()
		return 0, errors.New("boom")
	})
	if calls != 1 || err == nil {
		t.Errorf("calls %d, err %v; want one call and an error", calls, err)
	}
}

func TestSleep(t *testing.T) {
	if err := Sleep(context.Background(), 0); err != nil {
		t.Errorf("Sleep(0) = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep on a cancelled context = %v, want context.Canceled", err)
	}
	if err := Sleep(context.Background(), time.Microsecond); err != nil {
		t.Errorf("Sleep(1µs) = %v", err)
	}
}

// TestAsked: the wait a response asks for, from Retry-After or the
// rate-limit headers (the longest), and none from a response without them.
func TestAsked(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name   string
		header map[string]string
		want   time.Duration
		ok     bool
	}{
		{"none", nil, 0, false},
		{"Retry-After seconds", map[string]string{"Retry-After": "7"}, 7 * time.Second, true},
		{"Retry-After zero", map[string]string{"Retry-After": "0"}, 0, true},
		{"Retry-After date", map[string]string{"Retry-After": now.Add(time.Minute).UTC().Format(http.TimeFormat)}, time.Minute, true},
		{"Retry-After not uncapped here", map[string]string{"Retry-After": "86400"}, 24 * time.Hour, true},
		{"draft-07 reset", map[string]string{"RateLimit": "limit=100, remaining=0, reset=42"}, 42 * time.Second, true},
		{"draft-08 t", map[string]string{"RateLimit": `"default";r=0;t=17`}, 17 * time.Second, true},
		{"RateLimit-Reset", map[string]string{"RateLimit-Reset": "5"}, 5 * time.Second, true},
		{"X-RateLimit-Reset seconds", map[string]string{"X-RateLimit-Reset": "60"}, 60 * time.Second, true},
		{"X-RateLimit-Reset epoch", map[string]string{"X-RateLimit-Reset": "1800000030"}, 30 * time.Second, true},
		{"X-RateLimit-Reset epoch past", map[string]string{"X-RateLimit-Reset": "1700000000"}, 0, true},
		{"the longest wins", map[string]string{"RateLimit": "reset=3", "X-RateLimit-Reset": "9", "Retry-After": "4"}, 9 * time.Second, true},
		{"Retry-After longer than the reset", map[string]string{"Retry-After": "12", "RateLimit-Reset": "2"}, 12 * time.Second, true},
		{"garbage", map[string]string{"RateLimit": "reset=soon", "X-RateLimit-Reset": "-4", "Retry-After": "later"}, 0, false},
		{"huge reset", map[string]string{"RateLimit-Reset": "1e300"}, time.Duration(1<<63 - 1), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.header {
				h.Set(k, v)
			}
			if got, ok := Asked(h, now); got != tc.want || ok != tc.ok {
				t.Fatalf("got %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestWait: the one retry rule. A wait the server asks for is taken as
// given (not the longer of it and our backoff, not jittered), capped at the
// limit; without one, our own backoff, capped too.
func TestWait(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name       string
		header     map[string]string
		own, limit time.Duration
		want       time.Duration
	}{
		{"asked, shorter than our backoff", map[string]string{"Retry-After": "1"}, 8 * time.Second, time.Minute, time.Second},
		{"asked, longer than our backoff", map[string]string{"Retry-After": "30"}, 2 * time.Second, time.Minute, 30 * time.Second},
		{"asked zero", map[string]string{"Retry-After": "0"}, 2 * time.Second, time.Minute, 0},
		{"asked over the limit", map[string]string{"Retry-After": "3600"}, 2 * time.Second, time.Minute, time.Minute},
		{"asked with no limit", map[string]string{"Retry-After": "3600"}, 2 * time.Second, 0, time.Hour},
		{"asked by a rate limit alone", map[string]string{"X-RateLimit-Reset": "5"}, time.Second, time.Minute, 5 * time.Second},
		{"not asked: our backoff", nil, 3 * time.Second, time.Minute, 3 * time.Second},
		{"not asked, backoff over the limit", nil, 3 * time.Minute, time.Minute, time.Minute},
		{"unreadable Retry-After: our backoff", map[string]string{"Retry-After": "soon"}, 3 * time.Second, time.Minute, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h http.Header
			if tc.header != nil {
				h = http.Header{}
				for k, v := range tc.header {
					h.Set(k, v)
				}
			}
			if got := Wait(h, now, tc.own, tc.limit); got != tc.want {
				t.Fatalf("Wait = %v, want %v", got, tc.want)
			}
		})
	}
	// The server's wait is not jittered: the same answer every time.
	h := http.Header{"Retry-After": []string{"2"}}
	for i := 0; i < 100; i++ {
		if got := Wait(h, now, Policy{Interval: time.Second, BackoffRate: 2, Jitter: true}.Delay(3), time.Minute); got != 2*time.Second {
			t.Fatalf("try %d: Wait = %v, want exactly 2s", i, got)
		}
	}
}
