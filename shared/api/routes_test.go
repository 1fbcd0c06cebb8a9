package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// groupSource is the fake source with Group read and search (GR-01).
type groupSource struct{ *exporttest.Source }

func (s groupSource) ReadResource(_ context.Context, t, id string) ([]byte, error) {
	if _, ok := s.Groups[id]; t != "Group" || !ok {
		return nil, export.ErrGroupNotFound
	}
	return []byte(`{"resourceType":"Group","id":"` + id + `","type":"person","actual":true}`), nil
}

func (s groupSource) SearchGroups(_ context.Context, identifier, name string) ([][]byte, error) {
	var out [][]byte
	for id := range s.Groups {
		if name == "" || name == id {
			out = append(out, []byte(`{"resourceType":"Group","id":"`+id+`"}`))
		}
	}
	return out, nil
}

// fileServer stands for the embedded file store's downloads.
type fileServer struct{}

func (fileServer) ServeFile(w http.ResponseWriter, _ *http.Request, key string, _ url.Values) {
	w.Header().Set("Content-Type", "application/fhir+ndjson")
	io.WriteString(w, `{"resourceType":"Patient","id":"a"}`+"\n")
}

// fixedTime is the clock of the jobs the route tests prepare.
var fixedTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// world is a handler with bulkfhir's own tokens and jobs in each state.
type world struct {
	h      http.Handler
	jobs   *exporttest.JobStore
	tokens map[string]string // name → bearer token
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys, err := smartauth.NewHMACKeys([]byte("0123456789abcdef0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sign := func(client, scope string, at time.Time) string {
		s, err := smartauth.ParseScopes(scope)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := keys.Sign(client, s, at, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	w := &world{jobs: exporttest.NewJobStore(), tokens: map[string]string{
		"c1":        sign("c1", "system/*.read", now),
		"c1 narrow": sign("c1", "system/Observation.read", now),
		"c2":        sign("c2", "system/*.read", now),
		"expired":   sign("c1", "system/*.read", now.Add(-2*time.Hour)),
	}}
	files := exporttest.NewFileStore()
	src := groupSource{&exporttest.Source{
		Lines:  map[string][]string{"Patient": {`{"resourceType":"Patient","id":"a"}`}, "Observation": {`{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/a"}}`}},
		Groups: map[string][]string{"g": {"a"}},
	}}
	svc := export.NewService(w.jobs, files, nopRunner{}, src, export.Config{}, quiet)
	w.h = api.New(svc, api.Config{Auth: api.Tokens{Keys: keys}, TokenURL: smartauth.TokenPath, Files: fileServer{}, Version: "test", Log: quiet})

	req := bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON, Types: []string{"Patient"}}
	add := func(id, owner string, status export.Status, mod func(*export.Job)) {
		j := &export.Job{ID: id, Owner: owner, Status: status, Request: req, RequestURL: "http://bulk.test/fhir/$export?_type=Patient",
			TransactionTime: fixedTime, CreatedAt: fixedTime, UpdatedAt: fixedTime, ExpiresAt: fixedTime.AddDate(100, 0, 0)}
		if mod != nil {
			mod(j)
		}
		if err := w.jobs.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	add("running", "c1", export.StatusInProgress, nil)
	add("done", "c1", export.StatusInProgress, nil)
	for _, f := range []export.File{
		{Key: "done/Patient.000.ndjson", Kind: export.KindOutput, Type: "Patient", Count: 2, Bytes: 80, Unit: "Patient.0000"},
		{Key: "done/Patient.001.ndjson", Kind: export.KindOutput, Type: "Patient", Count: 1, Bytes: 40, Unit: "Patient.0000", Seq: 1},
		{Key: "done/errors.ndjson", Kind: export.KindError, Type: "OperationOutcome", Count: 1, Bytes: 120, Unit: "Patient.0000"},
	} {
		if err := w.jobs.PutFile(ctx, "done", f); err != nil {
			t.Fatal(err)
		}
	}
	completed, expires := fixedTime.Add(time.Minute), fixedTime.AddDate(100, 0, 0)
	if _, err := w.jobs.Transition(ctx, "done", export.Transition{From: []export.Status{export.StatusInProgress}, To: export.StatusCompleted,
		CompletedAt: &completed, ExpiresAt: &expires}); err != nil {
		t.Fatal(err)
	}
	add("failed", "c1", export.StatusFailed, func(j *export.Job) {
		o := fhir.Outcome(fhir.SeverityError, fhir.CodeTransient, "the upstream FHIR server could not be reached")
		j.Outcome, j.FailStatus = &o, http.StatusBadGateway
	})
	add("separate", "c1", export.StatusInProgress, func(j *export.Job) { j.Request.SeparateExportStatus = true })
	return w
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (w *world) do(t *testing.T, method, target, token string, header map[string]string, body string) response {
	t.Helper()
	req := httptest.NewRequest(method, "http://bulk.test"+target, strings.NewReader(body))
	req.Header.Set("Accept", "application/fhir+json")
	if token != "" {
		tok, ok := w.tokens[token]
		if !ok {
			tok = token // a literal bad token
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	w.h.ServeHTTP(rec, req)
	return response{rec.Code, rec.Header(), rec.Body.Bytes()}
}

// outcomeCode is the first issue's code of an OperationOutcome body, or ""
// when the body is not one.
func outcomeCode(b []byte) string {
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Code        string `json:"code"`
			Diagnostics string `json:"diagnostics"`
		} `json:"issue"`
	}
	if json.Unmarshal(b, &oo) != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 || oo.Issue[0].Diagnostics == "" {
		return ""
	}
	return oo.Issue[0].Code
}

var async = map[string]string{"Prefer": "respond-async"}

// TestRoutes: every route × method × authentication state answers its
// status, and every error is an OperationOutcome whose first issue has
// the code and a diagnostic.
func TestRoutes(t *testing.T) {
	params := `{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient"}]}`
	postAsync := map[string]string{"Prefer": "respond-async", "Content-Type": "application/fhir+json"}
	tests := []struct {
		name    string
		method  string
		target  string
		token   string // a name in world.tokens, a literal token, or "" for none
		header  map[string]string
		body    string
		want    int
		outcome string // the OperationOutcome's first issue code; "" for a body that is not one
		check   func(t *testing.T, r response)
	}{
		// CapabilityStatement: public, GET and HEAD only.
		{name: "metadata", method: "GET", target: "/fhir/metadata", want: 200, check: resourceType("CapabilityStatement")},
		{name: "metadata with a token", method: "GET", target: "/fhir/metadata", token: "c1", want: 200, check: resourceType("CapabilityStatement")},
		{name: "metadata HEAD", method: "HEAD", target: "/fhir/metadata", want: 200},
		{name: "metadata POST", method: "POST", target: "/fhir/metadata", token: "c1", want: 405, outcome: "not-supported", check: allow("GET")},

		// System kick-off.
		{name: "system GET", method: "GET", target: "/fhir/$export", token: "c1", header: async, want: 202, outcome: "informational", check: contentLocation},
		{name: "system POST Parameters", method: "POST", target: "/fhir/$export", token: "c1", header: postAsync, body: params, want: 202, outcome: "informational", check: contentLocation},
		{name: "system without a token", method: "GET", target: "/fhir/$export", header: async, want: 401, outcome: "login", check: challenge(false)},
		{name: "system with a bad token", method: "GET", target: "/fhir/$export", token: "forged", header: async, want: 401, outcome: "login", check: challenge(true)},
		{name: "system with an expired token", method: "GET", target: "/fhir/$export", token: "expired", header: async, want: 401, outcome: "login", check: challenge(true)},
		{name: "system with a token in the query", method: "GET", target: "/fhir/$export?access_token=x", header: async, want: 401, outcome: "login"},
		{name: "system type outside the scopes", method: "GET", target: "/fhir/$export?_type=Patient", token: "c1 narrow", header: async, want: 403, outcome: "forbidden"},
		{name: "system within narrow scopes", method: "GET", target: "/fhir/$export?_type=Observation", token: "c1 narrow", header: async, want: 202, outcome: "informational"},
		{name: "system without Prefer", method: "GET", target: "/fhir/$export", token: "c1", want: 400},
		{name: "system unknown parameter", method: "GET", target: "/fhir/$export?_bogus=1", token: "c1", header: async, want: 400},
		{name: "system PUT", method: "PUT", target: "/fhir/$export", token: "c1", header: async, want: 405, outcome: "not-supported", check: allow("GET, POST")},
		{name: "system DELETE", method: "DELETE", target: "/fhir/$export", token: "c1", want: 405, outcome: "not-supported"},

		// Patient and Group kick-off.
		{name: "patient GET", method: "GET", target: "/fhir/Patient/$export", token: "c1", header: async, want: 202, outcome: "informational", check: contentLocation},
		{name: "patient without a token", method: "GET", target: "/fhir/Patient/$export", header: async, want: 401, outcome: "login"},
		{name: "patient PATCH", method: "PATCH", target: "/fhir/Patient/$export", token: "c1", want: 405, outcome: "not-supported"},
		{name: "group GET", method: "GET", target: "/fhir/Group/g/$export", token: "c1", header: async, want: 202, outcome: "informational", check: contentLocation},
		{name: "group POST", method: "POST", target: "/fhir/Group/g/$export", token: "c1", header: postAsync, body: params, want: 202, outcome: "informational"},
		{name: "group not a FHIR id", method: "GET", target: "/fhir/Group/a$b/$export", token: "c1", header: async, want: 400, outcome: "value"},
		{name: "group without a token", method: "GET", target: "/fhir/Group/g/$export", header: async, want: 401, outcome: "login"},
		{name: "group PUT", method: "PUT", target: "/fhir/Group/g/$export", token: "c1", want: 405, outcome: "not-supported"},

		// Status, cancel.
		{name: "status in progress", method: "GET", target: "/fhir/bulkstatus/running", token: "c1", want: 202, check: progress},
		{name: "status complete", method: "GET", target: "/fhir/bulkstatus/done", token: "c1", want: 200, check: manifest},
		{name: "status failed", method: "GET", target: "/fhir/bulkstatus/failed", token: "c1", want: 502, outcome: "transient"},
		{name: "status separate-export-status", method: "GET", target: "/fhir/bulkstatus/separate", token: "c1", want: 200, outcome: "informational", check: exportStatus("202 Accepted")},
		{name: "status of another client's job", method: "GET", target: "/fhir/bulkstatus/running", token: "c2", want: 404, outcome: "not-found"},
		{name: "status unknown", method: "GET", target: "/fhir/bulkstatus/nope", token: "c1", want: 404, outcome: "not-found"},
		{name: "status without a token", method: "GET", target: "/fhir/bulkstatus/running", want: 401, outcome: "login"},
		{name: "status wider than the token", method: "GET", target: "/fhir/bulkstatus/done", token: "c1 narrow", want: 403, outcome: "forbidden"},
		{name: "status POST", method: "POST", target: "/fhir/bulkstatus/running", token: "c1", want: 405, outcome: "not-supported", check: allow("GET, DELETE")},
		{name: "cancel another client's job", method: "DELETE", target: "/fhir/bulkstatus/done", token: "c2", want: 404, outcome: "not-found"},
		{name: "cancel without a token", method: "DELETE", target: "/fhir/bulkstatus/done", want: 401, outcome: "login"},
		{name: "cancel", method: "DELETE", target: "/fhir/bulkstatus/failed", token: "c1", want: 202, outcome: "informational"},

		// Group read and search (GR-01).
		{name: "group read", method: "GET", target: "/fhir/Group/g", token: "c1", want: 200, check: resourceType("Group")},
		{name: "group read unknown", method: "GET", target: "/fhir/Group/zz", token: "c1", want: 404, outcome: "not-found"},
		{name: "group read not an id", method: "GET", target: "/fhir/Group/a$b", token: "c1", want: 400, outcome: "value"},
		{name: "group read without a token", method: "GET", target: "/fhir/Group/g", want: 401, outcome: "login"},
		{name: "group read outside the scopes", method: "GET", target: "/fhir/Group/g", token: "c1 narrow", want: 403, outcome: "forbidden"},
		{name: "group read DELETE", method: "DELETE", target: "/fhir/Group/g", token: "c1", want: 405, outcome: "not-supported", check: allow("GET")},
		{name: "group search", method: "GET", target: "/fhir/Group?name=g", token: "c1", want: 200, check: resourceType("Bundle")},
		{name: "group search unknown parameter", method: "GET", target: "/fhir/Group?member=a", token: "c1", want: 400, outcome: "not-supported"},
		{name: "group search repeated parameter", method: "GET", target: "/fhir/Group?name=a&name=b", token: "c1", want: 400, outcome: "invalid"},
		{name: "group search without a token", method: "GET", target: "/fhir/Group", want: 401, outcome: "login"},
		{name: "group search outside the scopes", method: "GET", target: "/fhir/Group", token: "c1 narrow", want: 403, outcome: "forbidden"},
		{name: "group search POST", method: "POST", target: "/fhir/Group", token: "c1", want: 405, outcome: "not-supported"},

		// Embedded downloads: the owner's token, scopes by file type.
		{name: "download", method: "GET", target: "/fhir/bulkfiles/done/Patient.000.ndjson", token: "c1", want: 200},
		{name: "download HEAD", method: "HEAD", target: "/fhir/bulkfiles/done/Patient.000.ndjson", token: "c1", want: 200},
		{name: "download errors file with narrow scopes", method: "GET", target: "/fhir/bulkfiles/done/errors.ndjson", token: "c1 narrow", want: 200},
		{name: "download outside the scopes", method: "GET", target: "/fhir/bulkfiles/done/Patient.000.ndjson", token: "c1 narrow", want: 403, outcome: "forbidden"},
		{name: "download another client's file", method: "GET", target: "/fhir/bulkfiles/done/Patient.000.ndjson", token: "c2", want: 404, outcome: "not-found"},
		{name: "download without a token", method: "GET", target: "/fhir/bulkfiles/done/Patient.000.ndjson", want: 401, outcome: "login"},
		{name: "download POST", method: "POST", target: "/fhir/bulkfiles/done/Patient.000.ndjson", token: "c1", want: 405, outcome: "not-supported", check: allow("GET, HEAD")},

		// Anything else.
		{name: "outside the base", method: "GET", target: "/other", token: "c1", want: 404, outcome: "not-found"},
		{name: "a prefix of the base", method: "GET", target: "/fhirx/metadata", want: 404, outcome: "not-found"},
		{name: "unknown endpoint", method: "GET", target: "/fhir/Patient", token: "c1", want: 404, outcome: "not-supported"},
		{name: "status without an id", method: "GET", target: "/fhir/bulkstatus/a/b", token: "c1", want: 404, outcome: "not-supported"},
	}
	w := newWorld(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := w.do(t, tc.method, tc.target, tc.token, tc.header, tc.body)
			if r.status != tc.want {
				t.Fatalf("%s %s → %d, want %d: %s", tc.method, tc.target, r.status, tc.want, r.body)
			}
			if tc.method == http.MethodHead {
				return
			}
			got := outcomeCode(r.body)
			if r.status >= 400 && got == "" {
				t.Errorf("%d without an OperationOutcome with a diagnostic: %s", r.status, r.body)
			}
			if tc.outcome != "" && got != tc.outcome {
				t.Errorf("issue code %q, want %q: %s", got, tc.outcome, r.body)
			}
			if got != "" && !strings.HasPrefix(r.header.Get("Content-Type"), "application/fhir+json") {
				t.Errorf("OperationOutcome with Content-Type %q", r.header.Get("Content-Type"))
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func resourceType(want string) func(*testing.T, response) {
	return func(t *testing.T, r response) {
		var v struct{ ResourceType string }
		if json.Unmarshal(r.body, &v) != nil || v.ResourceType != want {
			t.Errorf("body is not a %s: %.200s", want, r.body)
		}
	}
}

func allow(want string) func(*testing.T, response) {
	return func(t *testing.T, r response) {
		if got := r.header.Get("Allow"); got != want {
			t.Errorf("Allow %q, want %q", got, want)
		}
	}
}

func challenge(invalid bool) func(*testing.T, response) {
	return func(t *testing.T, r response) {
		got := r.header.Get("WWW-Authenticate")
		if !strings.HasPrefix(got, "Bearer ") || strings.Contains(got, "invalid_token") != invalid {
			t.Errorf("WWW-Authenticate %q; want a Bearer challenge, invalid_token %v", got, invalid)
		}
	}
}

func contentLocation(t *testing.T, r response) {
	if loc := r.header.Get("Content-Location"); !strings.HasPrefix(loc, "http://bulk.test/fhir/bulkstatus/") {
		t.Errorf("Content-Location %q, want an absolute status URL", loc)
	}
}

func progress(t *testing.T, r response) {
	if r.header.Get("X-Progress") == "" || r.header.Get("Retry-After") == "" {
		t.Errorf("202 without X-Progress or Retry-After: %v", r.header)
	}
}

func exportStatus(want string) func(*testing.T, response) {
	return func(t *testing.T, r response) {
		if got := r.header.Get("X-Export-Status"); got != want {
			t.Errorf("X-Export-Status %q, want %q", got, want)
		}
	}
}

func manifest(t *testing.T, r response) {
	var m struct {
		TransactionTime string
		Output          []struct{ Type, URL string }
		Error           []struct{ Type, URL string }
	}
	if err := json.Unmarshal(r.body, &m); err != nil || len(m.Output) != 2 || len(m.Error) != 1 {
		t.Errorf("manifest %s: want 2 outputs and 1 error file (%v)", r.body, err)
	}
	if r.header.Get("Expires") == "" {
		t.Error("manifest without Expires")
	}
}

// TestCancelThenStatus: a cancelled job is gone for its owner (404), and
// cancelling it again is 404 too.
func TestCancelThenStatus(t *testing.T) {
	w := newWorld(t)
	if r := w.do(t, "DELETE", "/fhir/bulkstatus/running", "c1", nil, ""); r.status != 202 {
		t.Fatalf("cancel → %d: %s", r.status, r.body)
	}
	for _, method := range []string{"GET", "DELETE"} {
		if r := w.do(t, method, "/fhir/bulkstatus/running", "c1", nil, ""); r.status != 404 || outcomeCode(r.body) != "not-found" {
			t.Errorf("%s after cancel → %d %s, want 404 not-found", method, r.status, r.body)
		}
	}
}
