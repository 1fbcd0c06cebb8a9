package api

import (
	"net/http"
	"slices"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

func scopes(t *testing.T, s string) smartauth.Scopes {
	t.Helper()
	sc, err := smartauth.ParseScopes(s)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

// TestAuthorizeTypes: A-12 and G-03 at kick-off.
func TestAuthorizeTypes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		scope     string // "" = no scopes (anonymous, static tokens)
		req       bulkdata.Request
		status    int      // 0 = allowed
		wantTypes []string // req.Types after the check
	}{
		{"no scopes in play", "", bulkdata.Request{Level: bulkdata.LevelSystem}, 0, nil},
		{"wildcard", "system/*.read", bulkdata.Request{Level: bulkdata.LevelSystem, Types: []string{"Observation"}}, 0, []string{"Observation"}},
		{"v2 wildcard", "system/*.rs", bulkdata.Request{Level: bulkdata.LevelSystem}, 0, nil},
		{"_type within", "system/Patient.read system/Observation.rs", bulkdata.Request{Level: bulkdata.LevelSystem, Types: []string{"Patient", "Observation"}}, 0, []string{"Patient", "Observation"}},
		{"_type outside", "system/Patient.read", bulkdata.Request{Level: bulkdata.LevelSystem, Types: []string{"Patient", "Observation"}}, http.StatusForbidden, nil},
		{"_typeFilter outside", "system/Patient.read", bulkdata.Request{Level: bulkdata.LevelSystem, TypeFilters: []string{"Observation?code=x"}}, http.StatusForbidden, nil},
		{"associated Provenance outside", "system/Patient.read", bulkdata.Request{Level: bulkdata.LevelSystem, IncludeAssociatedData: []string{bulkdata.RelevantProvenanceResources}}, http.StatusForbidden, nil},
		{"no _type: the granted types", "system/Observation.read system/Patient.rs", bulkdata.Request{Level: bulkdata.LevelSystem}, 0, []string{"Observation", "Patient"}},
		{"patient level keeps the compartment", "system/Patient.read system/Organization.read", bulkdata.Request{Level: bulkdata.LevelPatient}, 0, []string{"Patient"}},
		{"patient level, nothing in the compartment", "system/Organization.read", bulkdata.Request{Level: bulkdata.LevelGroup}, http.StatusForbidden, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Caller{Client: "c"}
			if tc.scope != "" {
				c.Scopes = scopes(t, tc.scope)
			}
			req := tc.req
			err := authorizeTypes(c, &req)
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if !slices.Equal(req.Types, tc.wantTypes) {
					t.Errorf("types %v, want %v", req.Types, tc.wantTypes)
				}
				return
			}
			if err == nil || err.Status != tc.status || len(err.Outcome.Issue) == 0 {
				t.Fatalf("got %v, want %d with an OperationOutcome", err, tc.status)
			}
		})
	}
}

func TestCoversJob(t *testing.T) {
	job := func(types ...string) *export.Job { return &export.Job{Request: bulkdata.Request{Types: types}} }
	for _, tc := range []struct {
		scope string
		job   *export.Job
		want  bool
	}{
		{"", job(), true},
		{"system/*.read", job(), true},
		{"system/Patient.read", job(), false},
		{"system/Patient.read", job("Patient"), true},
		{"system/Patient.read", job("Patient", "Observation"), false},
	} {
		c := Caller{Client: "c"}
		if tc.scope != "" {
			c.Scopes = scopes(t, tc.scope)
		}
		if got := coversJob(c, tc.job); got != tc.want {
			t.Errorf("coversJob(%q, %v) = %v, want %v", tc.scope, tc.job.Request.Types, got, tc.want)
		}
	}
}

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		url, header, want string
		ok                bool
	}{
		{"/x", "Bearer abc", "abc", true},
		{"/x", "bearer  abc ", "abc", true},
		{"/x", "", "", false},
		{"/x", "Basic abc", "", false},
		{"/x", "Bearer ", "", false},
		{"/x?access_token=abc", "", "", false},
		{"/x?access_token=abc", "Bearer abc", "", false},
	} {
		r, _ := http.NewRequest(http.MethodGet, "http://h"+tc.url, nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		got, err := BearerToken(r)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("BearerToken(%s, %q) = %q, %v", tc.url, tc.header, got, err)
		}
	}
}

func TestTokenURL(t *testing.T) {
	for _, tc := range []struct{ cfg, want string }{
		{smartauth.TokenPath, "https://bulk.example/fhir/auth/token"},
		{"https://auth.example/token", "https://auth.example/token"},
		{"", ""}, // static tokens: no token endpoint to advertise
	} {
		h := &Handler{cfg: Config{TokenURL: tc.cfg}}
		if got := h.tokenURL("https://bulk.example/fhir"); got != tc.want {
			t.Errorf("tokenURL(%q) = %q, want %q", tc.cfg, got, tc.want)
		}
		_, has := h.security("https://bulk.example/fhir")["extension"]
		if has != (tc.want != "") {
			t.Errorf("TokenURL %q: oauth-uris extension present = %v", tc.cfg, has)
		}
	}
}
