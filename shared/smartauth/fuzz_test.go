package smartauth

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzTokenEndpoint: whatever the body, the token endpoint answers a 4xx
// OAuth error (or 200 for a valid request), never a 5xx or a panic.
func FuzzTokenEndpoint(f *testing.F) {
	f.Add("grant_type=client_credentials&client_assertion_type=" + AssertionType + "&client_assertion=a.b.c&scope=system/*.read")
	f.Add("grant_type=client_credentials&scope=system%2FFoo.rs%3Fx%3D1")
	f.Add("client_assertion=eyJhbGciOiJub25lIn0.eyJpc3MiOiJlcyJ9.&client_assertion_type=" + AssertionType + "&grant_type=client_credentials&scope=")
	f.Add("%zz")
	f.Fuzz(func(t *testing.T, body string) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "http://bulk.example/fhir/auth/token", strings.NewReader(body))
		req.Header.Set("Content-Type", formType)
		s := &Server{Clients: StaticClients{}, Replay: &memReplay{}, Keys: nil, BasePath: "/fhir", Log: slog.New(slog.DiscardHandler)}
		s.ServeHTTP(rec, req)
		if rec.Code >= 500 || rec.Code == 200 {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
		if !strings.Contains(rec.Body.String(), `"error"`) {
			t.Fatalf("no OAuth error for %q: %s", body, rec.Body)
		}
	})
}
