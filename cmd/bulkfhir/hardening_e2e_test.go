package main

import (
	"net/http"
	"strings"
	"testing"
)

// TestHostileRequests drives hostile and malformed requests at the built
// server: each is a 4xx OperationOutcome naming what was wrong, and lenient
// handling never turns one into a wider export (issue 18).
func TestHostileRequests(t *testing.T) {
	s := startServer(t, dataDir)
	b := s.base
	lenient := http.Header{"Accept": {"application/fhir+json"}, "Prefer": {"respond-async, handling=lenient"}}
	post := kickHeaders("Content-Type", "application/fhir+json")
	many := strings.Repeat("_pretty=1&", 101)
	cases := []struct {
		name   string
		method string
		url    string
		header http.Header
		body   string
		status int
		want   string
	}{
		// Strict parsing of the raw query: net/url would drop these pairs.
		{"semicolon after _type", "GET", b + "/$export?_type=Patient;", kickHeaders(), "", 400, "';'"},
		{"semicolon after _type, lenient", "GET", b + "/$export?_type=Patient;", lenient, "", 400, "';'"},
		{"semicolon in _typeFilter", "GET", b + "/$export?_typeFilter=Observation%3Fcode%3Da;x", kickHeaders(), "", 400, "';'"},
		{"bad escape", "GET", b + "/$export?_type=%zz", kickHeaders(), "", 400, "percent-encoding"},
		{"bad escape in name", "GET", b + "/$export?%zz=1", lenient, "", 400, "percent-encoding"},
		{"pair without name", "GET", b + "/$export?=Patient", kickHeaders(), "", 400, "no parameter name"},
		{"too many parameters", "GET", b + "/$export?" + many, kickHeaders(), "", 400, "more than 100"},
		{"too many parameters, lenient", "GET", b + "/$export?" + many, lenient, "", 400, "more than 100"},
		{"_since twice", "GET", b + "/$export?_since=2020-01-01T00:00:00Z&_since=2021-01-01T00:00:00Z", lenient, "", 400, "only once"},
		{"_outputFormat in query and body", "POST", b + "/$export?_outputFormat=ndjson", post,
			`{"resourceType":"Parameters","parameter":[{"name":"_outputFormat","valueString":"ndjson"}]}`, 400, "only once"},
		// Lenient handling refuses what it could only drop by widening.
		{"lenient unsupported _typeFilter", "GET", b + "/$export?_type=Patient&_typeFilter=Patient%3Fgender%3Dfemale", lenient, "", 400, "_typeFilter"},
		{"lenient unknown parameter", "GET", b + "/$export?_type=Patient&_typeFiltr=Patient%3Fgender%3Dfemale", lenient, "", 400, "_typeFiltr"},
		{"lenient only unknown types", "GET", b + "/$export?_type=NotAType", lenient, "", 400, "every type"},
		{"lenient only non-compartment types", "GET", b + "/Patient/$export?_type=Organization", lenient, "", 400, "Patient compartment"},
		{"lenient patient in GET", "GET", b + "/Patient/$export?patient=Patient/1", lenient, "", 400, "patient"},
		{"lenient bad _since", "GET", b + "/$export?_since=yesterday", lenient, "", 400, "_since"},
		{"lenient bad _elements", "GET", b + "/$export?_elements=Patient.name.given", lenient, "", 400, "_elements"},
		// Ids.
		{"group dot", "GET", b + "/Group/./$export", kickHeaders(), "", 400, "not a FHIR id"},
		{"group dot dot", "GET", b + "/Group/../$export", kickHeaders(), "", 400, "not a FHIR id"},
		{"group read dot dot", "GET", b + "/Group/..", nil, "", 400, "not a FHIR id"},
		{"group id too long", "GET", b + "/Group/" + strings.Repeat("g", 65) + "/$export", kickHeaders(), "", 400, "not a FHIR id"},
		{"group id bad char", "GET", b + "/Group/a%20b/$export", kickHeaders(), "", 400, "not a FHIR id"},
		{"job id 3000 chars", "GET", b + "/bulkstatus/" + strings.Repeat("a", 3000), nil, "", 404, "no such export"},
		{"job id 3000 chars, DELETE", "DELETE", b + "/bulkstatus/" + strings.Repeat("a", 3000), nil, "", 404, "no such export"},
		{"job id with NUL", "GET", b + "/bulkstatus/ab%00cd", nil, "", 404, "no such export"},
		// Group search goes through the same parser.
		{"group search semicolon", "GET", b + "/Group?name=a;b", nil, "", 400, "';'"},
		{"group search repeated", "GET", b + "/Group?identifier=a&identifier=b", nil, "", 400, "only once"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requireOutcome(t, do(t, tc.method, tc.url, tc.header, tc.body), tc.status, tc.want)
		})
	}
}
