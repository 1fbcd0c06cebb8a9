package functions_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/bulkfhir/bulkfhir/shared/dynamostore"
	"github.com/bulkfhir/bulkfhir/shared/settings"
)

var queueTables atomic.Int32

// ownTable gives the test a table of its own (the queue's running places
// are global to a table) and runs the functions on it with extra settings.
func ownTable(t *testing.T, cl *cluster, extra map[string]string) {
	t.Helper()
	name := fmt.Sprintf("jobs-queue-%d", queueTables.Add(1))
	ddb := dynamodb.NewFromConfig(cl.awsCfg, func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true })
	if err := dynamostore.CreateTable(context.Background(), ddb, name); err != nil {
		t.Fatal(err)
	}
	extra[settings.EnvTable] = name
	cl.withEnv(t, extra)
}

// holdPatients makes every Patient chunk wait until the test ends, so no
// job ends by itself.
func holdPatients(t *testing.T, cl *cluster) {
	gate := make(chan struct{})
	cl.mu.Lock()
	cl.block["Patient.0000"] = gate
	cl.mu.Unlock()
	t.Cleanup(func() { cl.mu.Lock(); delete(cl.block, "Patient.0000"); cl.mu.Unlock(); close(gate) })
}

// TestQueueOnAWS: with maxRunningJobs 2, the third and fourth kick-offs wait
// as accepted (no execution started) with their place in line; a cancel
// starts the oldest waiting job at once, and the last one starts when an
// execution ends (the dispatch function on the EventBridge rule). Run on
// DynamoDB Local and the state machine runner.
func TestQueueOnAWS(t *testing.T) {
	cl := need(t)
	ownTable(t, cl, map[string]string{settings.EnvMaxRunningJobs: "2"})
	gate := make(chan struct{})
	cl.mu.Lock()
	cl.block["Patient.0000"] = gate
	cl.mu.Unlock()
	released := false
	release := func() {
		if !released {
			released = true
			cl.mu.Lock()
			delete(cl.block, "Patient.0000")
			cl.mu.Unlock()
			close(gate)
		}
	}
	t.Cleanup(release)
	var jobs []string
	for i := 0; i < 4; i++ {
		jobs = append(jobs, kickoff(t, http.MethodGet, "/fhir/$export", "_type=Patient", ""))
	}
	progress := func(i int) string {
		t.Helper()
		r := apiRequest(t, http.MethodGet, "/fhir/bulkstatus/"+jobs[i], "", "", "")
		if r.StatusCode != http.StatusAccepted {
			t.Fatalf("status of kick-off %d = %d: %s", i, r.StatusCode, r.Body)
		}
		return header(r, "X-Progress")
	}
	for i, want := range map[int]string{2: "queued: 0 jobs ahead", 3: "queued: 1 job ahead"} {
		if got := progress(i); got != want {
			t.Errorf("X-Progress of kick-off %d = %q, want %q", i, got, want)
		}
	}
	for i, job := range jobs {
		if started := cl.execution(job) != nil; started != (i < 2) {
			t.Errorf("kick-off %d: execution started = %v, want %v", i, started, i < 2)
		}
	}
	if r := apiRequest(t, http.MethodDelete, "/fhir/bulkstatus/"+jobs[0], "", "", ""); r.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE = %d: %s", r.StatusCode, r.Body)
	}
	if cl.execution(jobs[2]) == nil {
		t.Error("a cancel did not start the oldest waiting job at once")
	}
	if cl.execution(jobs[3]) != nil {
		t.Error("the newest job started before the oldest waiting one")
	}
	if got := progress(3); got != "queued: 0 jobs ahead" {
		t.Errorf("X-Progress of the last kick-off after the cancel = %q", got)
	}
	release()
	for _, i := range []int{1, 2, 3} {
		m := completed(t, jobs[i])
		if len(m.Output) == 0 {
			t.Errorf("kick-off %d exported nothing", i)
		}
	}
}

// TestLiveJobCapOnAWS: 50 concurrent kick-offs of one client with a cap of
// 5 live jobs get exactly 5 × 202 and 45 × 429 on DynamoDB Local (the cap
// is kept with slot items in transactions, not an eventually consistent
// count), and a kick-off right after a cancel gets 202.
func TestLiveJobCapOnAWS(t *testing.T) {
	cl := need(t)
	// One job runs; the other live ones wait in the queue, and count.
	ownTable(t, cl, map[string]string{settings.EnvMaxLiveJobs: "5", settings.EnvMaxRunningJobs: "1"})
	holdPatients(t, cl)
	const n = 50
	codes := make([]int, n)
	locations := make([]string, n)
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			r := apiRequest(t, http.MethodGet, "/fhir/$export", "_type=Patient", "", fmt.Sprintf("cap-%s-%d", stamp, i))
			codes[i], locations[i] = r.StatusCode, header(r, "Content-Location")
		}(i)
	}
	close(start)
	wg.Wait()
	count := map[int]int{}
	var accepted []string
	for i, c := range codes {
		count[c]++
		if c == http.StatusAccepted {
			accepted = append(accepted, strings.TrimPrefix(locations[i], publicBase+"/bulkstatus/"))
		}
	}
	if count[http.StatusAccepted] != 5 || count[http.StatusTooManyRequests] != n-5 {
		t.Fatalf("statuses = %v, want 5 × 202 and %d × 429", count, n-5)
	}
	// The global limit held through the same race: one execution runs,
	// the other four jobs wait in line.
	started, queued := 0, map[string]bool{}
	for _, j := range accepted {
		if cl.execution(j) != nil {
			started++
		}
		r := apiRequest(t, http.MethodGet, "/fhir/bulkstatus/"+j, "", "", "")
		if p := header(r, "X-Progress"); strings.HasPrefix(p, "queued: ") {
			queued[p] = true
		}
	}
	if started != 1 || len(queued) != 4 {
		t.Errorf("%d executions started, queue positions %v; want 1 and 4 distinct positions", started, queued)
	}
	if r := apiRequest(t, http.MethodGet, "/fhir/$export", "_type=Patient", "", ""); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("kick-off at the cap = %d, want 429", r.StatusCode)
	}
	if r := apiRequest(t, http.MethodDelete, "/fhir/bulkstatus/"+accepted[len(accepted)-1], "", "", ""); r.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE = %d: %s", r.StatusCode, r.Body)
	}
	after := kickoff(t, http.MethodGet, "/fhir/$export", "_type=Patient", "")
	t.Cleanup(func() {
		// End every job so no execution outlives the test.
		for _, j := range append(accepted, after) {
			apiRequest(t, http.MethodDelete, "/fhir/bulkstatus/"+j, "", "", "")
		}
	})
}
