package bulkclient

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// expiringServer is an export server whose download links stop working
// once a newer manifest was handed out (as presigned links end with their
// session): links of poll n work only while valid(n) says so.
type expiringServer struct {
	*httptest.Server
	valid func(v, polls int) bool

	mu    sync.Mutex
	polls int
	gets  int
}

func newExpiringServer(t *testing.T, valid func(v, polls int) bool) *expiringServer {
	s := &expiringServer{valid: valid}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch r.URL.Path {
		case "/fhir/$export":
			w.Header().Set("Content-Location", s.URL+"/fhir/status")
			w.WriteHeader(http.StatusAccepted)
		case "/fhir/status":
			s.polls++
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"transactionTime":"2026-01-01T00:00:00Z","request":"%[1]s/fhir/$export","requiresAccessToken":false,`+
				`"output":[{"type":"Patient","url":"%[1]s/files/Patient.ndjson?v=%[2]d","count":1}],"error":[]}`, s.URL, s.polls)
		case "/files/Patient.ndjson":
			s.gets++
			v, _ := strconv.Atoi(r.URL.Query().Get("v"))
			if !s.valid(v, s.polls) {
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusForbidden)
				w.Write([]byte(`<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>`))
				return
			}
			w.Write([]byte(`{"resourceType":"Patient","id":"1"}` + "\n"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// TestExpiredLinksAreRefreshed: a download refused because its link
// expired is retried once with the link of a new status poll; a link that
// is refused again fails the run (no loop).
func TestExpiredLinksAreRefreshed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		valid     func(v, polls int) bool
		wantErr   bool
		polls     int
		downloads int
	}{
		{"the first poll's links have expired", func(v, _ int) bool { return v >= 2 }, false, 2, 2},
		{"links that work", func(int, int) bool { return true }, false, 1, 1},
		{"links that never work", func(int, int) bool { return false }, true, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newExpiringServer(t, tc.valid)
			out := t.TempDir()
			c, err := New(Options{Server: s.URL + "/fhir", OutDir: out, MaxWait: 50 * time.Millisecond, MaxRetries: 2}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Run(t.Context())
			if (err != nil) != tc.wantErr {
				t.Fatalf("Run: %v, want error %v", err, tc.wantErr)
			}
			if s.polls != tc.polls || s.gets != tc.downloads {
				t.Errorf("%d status polls, %d downloads; want %d, %d", s.polls, s.gets, tc.polls, tc.downloads)
			}
			if !tc.wantErr {
				if b, err := os.ReadFile(filepath.Join(out, "Patient.1.ndjson")); err != nil || len(b) == 0 {
					t.Errorf("Patient.1.ndjson: %q %v", b, err)
				}
			}
		})
	}
}
