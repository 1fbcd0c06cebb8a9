package functions_test

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

// TestExecutionCarriesNoPatientIdsOrPageURLsOnAWS: a Group export from an
// upstream FHIR server that pages (next links with patient ids in their
// query) passes between the states only job ids, unit ids and object keys:
// no task input or output (what the execution's history keeps) names the
// upstream or a member patient.
func TestExecutionCarriesNoPatientIdsOrPageURLsOnAWS(t *testing.T) {
	cl := need(t)
	src := exporttest.ReadResources(t, cl.dataDir)
	up := loadedUpstream(t, cl.dataDir, 20)
	upstreamURL := cl.withUpstream(t, up)
	var mu sync.Mutex
	var seen []string
	cl.mu.Lock()
	cl.capture = func(payload, response []byte) {
		mu.Lock()
		seen = append(seen, string(payload), string(response))
		mu.Unlock()
	}
	cl.mu.Unlock()
	t.Cleanup(func() { cl.mu.Lock(); cl.capture = nil; cl.mu.Unlock() })

	members := exporttest.GroupMembers(t, src, "care-team-a")
	m := completed(t, kickoff(t, http.MethodGet, "/fhir/Group/care-team-a/$export", "", ""))
	exporttest.SameSet(t, download(t, m), exporttest.ExpectedCompartment(src, members))
	host := strings.TrimPrefix(upstreamURL, "http://")
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 6 {
		t.Fatalf("%d payloads captured", len(seen))
	}
	chunks := 0
	for _, p := range seen {
		if strings.Contains(p, `"cursor"`) {
			chunks++
		}
		if strings.Contains(p, host) || strings.Contains(p, url.QueryEscape(host)) {
			t.Errorf("a state carries the upstream's address: %.300s", p)
		}
		for id := range members {
			if strings.Contains(p, id) {
				t.Errorf("a state carries patient %s: %.300s", id, p)
				break
			}
		}
	}
	if chunks == 0 {
		t.Error("no chunk resumed from a cursor: the check saw no positions")
	}
}
