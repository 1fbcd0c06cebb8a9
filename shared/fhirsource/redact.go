package fhirsource

import (
	"errors"
	"net/url"
	"sync/atomic"
)

// Redact returns an upstream URL without its query: page links and
// searches carry patient ids and cursors there (patient=, _id=, an opaque
// page token), which must not reach logs, errors, Step Functions history or
// metrics. The origin and path stay, which is what an operator needs to see
// which upstream and resource type answered.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(an upstream URL)"
	}
	if u.RawQuery != "" {
		u.RawQuery = "…"
	}
	u.User, u.Fragment = nil, ""
	return u.String()
}

// redactURLError returns err with the URL of a *url.Error redacted (the
// error it wraps is kept, so errors.Is and errors.As still see timeouts).
func redactURLError(err error) error {
	var ue *url.Error
	if err == nil || !errors.As(err, &ue) || ue.URL == Redact(ue.URL) {
		return err
	}
	return &url.Error{Op: ue.Op, URL: Redact(ue.URL), Err: ue.Err}
}

// redactErr is err's text for a log line with the URL of a transport error
// (*url.Error) redacted.
func redactErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		c := *ue
		c.URL = Redact(ue.URL)
		return c.Error()
	}
	return err.Error()
}

// retryStats counts the upstream requests a client retried, and how many of
// those were 429 answers (the metrics of issue 16).
type retryStats struct {
	retries, throttled atomic.Int64
}

// RetryStats reports how many upstream requests the source retried since it
// was made, and how many of the retries followed a 429.
func (s *Source) RetryStats() (retries, throttled int64) {
	return s.client.stats.retries.Load(), s.client.stats.throttled.Load()
}

// CursorsByReference implements export.ReferencedCursors: a position of
// this source is an upstream link, which can name patients.
func (s *Source) CursorsByReference() bool { return true }
