package fhir

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// instantRE is the R4 instant regex: seconds and a time zone are required.
var instantRE = regexp.MustCompile(`^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))$`)

// ParseInstant parses a FHIR instant (e.g. 2020-01-01T00:00:00Z). A space where
// the zone sign should be is read as '+', because an unencoded '+' in a query
// string arrives as a space.
func ParseInstant(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if n := len(s); n > 6 && s[n-6] == ' ' && s[n-3] == ':' {
		s = s[:n-6] + "+" + s[n-5:]
	}
	if !instantRE.MatchString(s) {
		return time.Time{}, fmt.Errorf("%q is not a FHIR instant (want e.g. 2024-01-31T12:00:00Z, with seconds and a time zone)", s)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a valid date and time: %w", s, err)
	}
	return t, nil
}

// FormatInstant renders t as a FHIR instant in UTC with millisecond precision.
func FormatInstant(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// ParseLastUpdated parses meta.lastUpdated as stored in a resource. It is more
// forgiving than ParseInstant (any RFC 3339 time), because a source's data is
// not ours to reject.
func ParseLastUpdated(s string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}
