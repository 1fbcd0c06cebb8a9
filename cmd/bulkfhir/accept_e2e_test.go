package main

import (
	"net/http"
	"strings"
	"testing"
)

// requireTypedOutcome asserts an OperationOutcome reply with the status
// and the Content-Type the client's Accept called for.
func requireTypedOutcome(t *testing.T, r reply, status int, contentType, want string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != contentType {
		t.Errorf("Content-Type = %q, want %q", ct, contentType)
	}
	if m := r.json(t); m["resourceType"] != "OperationOutcome" {
		t.Fatalf("body is not an OperationOutcome: %s", r.body)
	}
	if !strings.Contains(string(r.body), want) {
		t.Errorf("OperationOutcome does not mention %q: %s", want, r.body)
	}
}

// TestKickoffAcceptMustAllowFHIRJSON: a kick-off whose Accept allows
// neither application/fhir+json nor */* is refused at every level, by GET
// and POST, with an OperationOutcome saying what to send (BDT "Requires
// Accept header"), in the media type the client asked for.
func TestKickoffAcceptMustAllowFHIRJSON(t *testing.T) {
	s := startServer(t, dataDir)
	for _, path := range []string{"/$export", "/Patient/$export", "/Group/small-cohort/$export"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			t.Run(method+path, func(t *testing.T) {
				for _, accept := range []string{"application/json", "text/html", "application/fhir+json;q=0, application/json"} {
					h := http.Header{"Accept": {accept}, "Prefer": {"respond-async"}}
					want := "application/fhir+json"
					if strings.HasSuffix(accept, "application/json") {
						want = "application/json"
					}
					requireTypedOutcome(t, do(t, method, s.base+path, h, ""), http.StatusNotAcceptable, want, "Accept: application/fhir+json")
				}
				for _, accept := range []string{"application/fhir+json", "*/*", "application/json, application/fhir+json;q=0.9", "application/*"} {
					h := http.Header{"Accept": {accept}, "Prefer": {"respond-async"}}
					r := do(t, method, s.base+path+"?_type=Patient", h, "")
					if r.status != http.StatusAccepted {
						t.Errorf("Accept %q: status %d, want 202: %s", accept, r.status, r.body)
						continue
					}
					// Cancel at once, so the client's live-job cap is never reached.
					if d := do(t, http.MethodDelete, r.header.Get("Content-Location"), nil, ""); d.status != http.StatusAccepted {
						t.Errorf("DELETE = %d", d.status)
					}
				}
			})
		}
	}
}

// TestStatusCancelAndErrorsHonourPlainJSON: a client that polls and
// cancels with Accept: application/json gets the same OperationOutcomes
// labelled application/json (BDT "Exports can be canceled").
func TestStatusCancelAndErrorsHonourPlainJSON(t *testing.T) {
	s := startServer(t, dataDir)
	plain := http.Header{"Accept": {"application/json"}}
	loc := kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), "")
	m := waitDone(t, loc, plain)
	if ct := m.header.Get("Content-Type"); m.status != http.StatusOK || ct != "application/json" {
		t.Fatalf("manifest: %d %q", m.status, ct)
	}
	requireTypedOutcome(t, do(t, http.MethodDelete, loc, plain, ""), http.StatusAccepted, "application/json", "cancelled")
	requireTypedOutcome(t, do(t, http.MethodDelete, loc, plain, ""), http.StatusNotFound, "application/json", "")
	requireTypedOutcome(t, do(t, http.MethodGet, loc, plain, ""), http.StatusNotFound, "application/json", "")
	requireTypedOutcome(t, do(t, http.MethodGet, s.base+"/bulkstatus/0123456789abcdef", plain, ""), http.StatusNotFound, "application/json", "")
	// Without that Accept (or with FHIR JSON in it) they stay FHIR JSON.
	for _, h := range []http.Header{nil, {"Accept": {"application/fhir+json"}}, {"Accept": {"application/json, */*"}}} {
		requireTypedOutcome(t, do(t, http.MethodGet, loc, h, ""), http.StatusNotFound, "application/fhir+json", "")
	}
}
