package functions_test

// make scale: exports large enough to cross every limit the old design
// hit, on the emulators with the limits enforced, checked line by line.
// BULKFHIR_SCALE=1 runs the full size (10,000+ units from S3 NDJSON, a
// Group of 20,000 patients from the test FHIR server); without it the
// same test runs small, as part of make test.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/dynamostore"
	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
	"github.com/bulkfhir/bulkfhir/shared/settings"
	"github.com/bulkfhir/bulkfhir/shared/waitfor"
)

// scaleSize is the size of a scale run.
type scaleSize struct {
	objects, perObject int // S3 NDJSON objects (one unit each) and resources in each
	members, others    int // Group members and patients outside the Group
}

// scaleConcurrency is the Distributed Map's MaxConcurrency in scale runs.
const scaleConcurrency = 16

func scaleSizes() scaleSize {
	if os.Getenv("BULKFHIR_SCALE") != "" {
		return scaleSize{objects: 10000, perObject: 10, members: 20000, others: 2000}
	}
	return scaleSize{objects: 300, perObject: 10, members: 400, others: 100}
}

// scaleResult is one run's line.
type scaleResult struct {
	units, files          int
	resources             int64
	maxState, maxHistory  int
	maxItem, maxLambda    int
	exact                 bool
	invocations, requests map[string]int
	transitions           int
	took                  time.Duration
}

func (r scaleResult) line() string {
	return fmt.Sprintf("scale: units=%d files=%d resources=%d max_state_bytes=%d max_history_events=%d max_item_bytes=%d exact=%t",
		r.units, r.files, r.resources, r.maxState, r.maxHistory, r.maxItem, r.exact)
}

func TestScale(t *testing.T) {
	cl := need(t)
	size := scaleSizes()
	// The stack's default is 10 child executions at once; the emulators
	// on two cores keep up with more.
	if err := cl.useDefinition(scaleConcurrency, 3600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.useDefinition(maxConcurrent, 3600) })
	t.Run("s3 objects", func(t *testing.T) {
		want := scaleObjects(t, cl, size)
		cl.withEnv(t, map[string]string{settings.EnvSourcePrefix: "scale/"})
		res := scaleRun(t, cl, "/fhir/$export", "_type=Observation", want)
		if res.units < size.objects {
			t.Errorf("%d units, want at least %d", res.units, size.objects)
		}
	})
	t.Run("group from a FHIR server", func(t *testing.T) {
		up, want := scaleGroup(t, size)
		cl.withUpstream(t, up)
		// Every type: the Group resource itself is in its members'
		// compartments, found by every batch, exported once.
		scaleRun(t, cl, "/fhir/Group/cohort/$export", "", want)
	})
}

// scaleRun exports, downloads every file and compares it with want, and
// checks and prints the run's figures.
func scaleRun(t *testing.T, cl *cluster, path, query string, want map[string][]byte) scaleResult {
	t.Helper()
	cl.takeCrossed()
	cl.mu.Lock()
	cl.limits = limitStats{}
	before := map[string]int{}
	for k, v := range cl.invocations {
		before[k] = v
	}
	cl.mu.Unlock()
	cl.counter.reset()
	start := time.Now()
	job := kickoff(t, http.MethodGet, path, query, "")
	// Wait on the job record (a client's status polls would read every
	// unit's item for X-Progress, competing with the export on two cores),
	// then take the manifest from the status route.
	ended := waitfor.Condition(14*time.Minute, 250*time.Millisecond, func() bool {
		j, err := cl.api.Jobs.Get(context.Background(), job)
		if err != nil {
			t.Fatal(err)
		}
		return !j.Status.Live()
	})
	if !ended {
		t.Fatalf("job %s did not finish in 14 minutes", job)
	}
	// As Go's, Node's and most HTTP clients do, the manifest is asked for
	// with Accept-Encoding: gzip: unpaged, 10,000 presigned links with
	// session tokens are over the 6 MB Lambda response plain.
	m := completedWith(t, job, map[string]string{"accept-encoding": "gzip"})
	res := scaleResult{took: time.Since(start), invocations: map[string]int{}}
	// A client that accepts no gzip gets the same files from the status
	// function, linked to its download route where presigned links would
	// not fit (docs/aws.md, "Manifests over the response limit").
	status, _ := statusFunction(t, cl)
	plain := gatewayInvoke(t, status, false, http.MethodGet, "/fhir/bulkstatus/"+job, nil)
	var pm manifest
	if plain.status != http.StatusOK || plain.eventBytes > maxLambdaResponse || json.Unmarshal(plain.body, &pm) != nil || len(pm.Output) != len(m.Output) {
		t.Errorf("manifest without gzip: status %d, %d bytes, %d files; want 200 under %d bytes with %d files",
			plain.status, plain.eventBytes, len(pm.Output), maxLambdaResponse, len(m.Output))
	}
	got, dups := downloadAll(t, m)
	res.files = len(m.Output)
	res.resources = int64(len(got))
	res.exact = dups == 0 && sameLines(got, want)
	if !res.exact {
		t.Errorf("export differs from the source: %d resources (%d exported twice), want %d", len(got), dups, len(want))
	}
	j, err := cl.api.Jobs.Get(context.Background(), job)
	if err != nil || j.Plan == nil {
		t.Fatalf("job %+v, %v", j, err)
	}
	res.units = j.Plan.Units
	res.maxItem = maxItemBytes(t, cl, job)
	cl.mu.Lock()
	lim := cl.limits
	for k, v := range cl.invocations {
		res.invocations[k] = v - before[k]
	}
	cl.mu.Unlock()
	res.maxState, res.maxHistory, res.maxLambda, res.transitions = lim.MaxStateBytes, lim.MaxHistoryEvents, lim.MaxLambdaBytes, lim.Transitions
	// Items written whole pass the proxy's check; the job item also grows
	// by updates, so every item of the job is measured as stored too.
	res.maxItem = max(res.maxItem, lim.MaxItemBytes)
	res.requests = cl.counter.snapshot()
	fmt.Println(res.line())
	fmt.Printf("scale-requests: executions=%d transitions=%d invocations=%v requests=%v took=%s\n",
		lim.Executions, res.transitions, res.invocations, res.requests, res.took.Round(time.Second))
	if crossed := cl.takeCrossed(); len(crossed) > 0 {
		t.Errorf("AWS limits crossed: %s", strings.Join(crossed, "; "))
	}
	if res.maxState > maxStateBytes || res.maxHistory > maxHistoryEvents || res.maxItem > dynamostore.MaxItemBytes || res.maxLambda > maxLambdaResponse {
		t.Errorf("a maximum is over its limit: %s", res.line())
	}
	return res
}

// sameLines reports whether got and want hold the same resources, byte for
// byte.
func sameLines(got, want map[string][]byte) bool {
	if len(got) != len(want) {
		return false
	}
	for k, w := range want {
		if !bytes.Equal(got[k], w) {
			return false
		}
	}
	return true
}

// downloadAll fetches every output file from its presigned URL (16 at a
// time) and returns the resources by Type/id and how many came twice.
func downloadAll(t *testing.T, m manifest) (map[string][]byte, int) {
	t.Helper()
	got := map[string][]byte{}
	var mu sync.Mutex
	dups := 0
	var wg sync.WaitGroup
	errs := make(chan error, len(m.Output))
	sem := make(chan struct{}, 16)
	for _, o := range m.Output {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := http.Get(o.URL)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("GET %s: %d", o.Type, resp.StatusCode)
				return
			}
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			n := int64(0)
			mu.Lock()
			defer mu.Unlock()
			for sc.Scan() {
				var h struct{ ResourceType, ID string }
				if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.ResourceType != o.Type {
					errs <- fmt.Errorf("%s file: bad line %.80s", o.Type, sc.Bytes())
					return
				}
				key := h.ResourceType + "/" + h.ID
				if _, ok := got[key]; ok {
					dups++
				}
				got[key] = append([]byte(nil), sc.Bytes()...)
				n++
			}
			if o.Count == nil || *o.Count != n {
				errs <- fmt.Errorf("%s count = %v, file has %d lines", o.Type, o.Count, n)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	return got, dups
}

// maxItemBytes is the size of the largest item in the job's partition.
func maxItemBytes(t *testing.T, cl *cluster, job string) int {
	t.Helper()
	db := dynamodb.NewFromConfig(cl.awsCfg, func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true })
	p := dynamodb.NewQueryPaginator(db, &dynamodb.QueryInput{
		TableName: aws.String(table), KeyConditionExpression: aws.String("pk = :pk"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": &types.AttributeValueMemberS{Value: "JOB#" + job}},
	})
	most := 0
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			most = max(most, dynamostore.ItemSize(it))
		}
	}
	return most
}

// scaleObjects uploads size.objects small NDJSON objects under scale/ in
// the source bucket and returns their resources.
func scaleObjects(t *testing.T, cl *cluster, size scaleSize) map[string][]byte {
	t.Helper()
	want := map[string][]byte{}
	bodies := make([][]byte, size.objects)
	for i := range bodies {
		var b bytes.Buffer
		for j := 0; j < size.perObject; j++ {
			id := fmt.Sprintf("o%05d-%03d", i, j)
			line := fmt.Sprintf(`{"resourceType":"Observation","id":%q,"meta":{"lastUpdated":"2025-03-01T00:00:00Z"},"status":"final","code":{"text":"scale %d"},"valueQuantity":{"value":%d}}`, id, i, j)
			want["Observation/"+id] = []byte(line)
			b.WriteString(line + "\n")
		}
		bodies[i] = b.Bytes()
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	errs := make(chan error, size.objects)
	for i, body := range bodies {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := cl.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(sourceBucket),
				Key: aws.String(fmt.Sprintf("scale/Observation/part-%05d.ndjson", i)), Body: bytes.NewReader(body)})
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return want
}

// scaleGroup is a FHIR server with size.members + size.others patients,
// two Observations each, and Group "cohort" of the members (plus a few
// inactive ones, which are not exported), and what exporting the Group
// must return.
func scaleGroup(t *testing.T, size scaleSize) (*fhirtest.Server, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	want := map[string][]byte{}
	var pats, obs bytes.Buffer
	var members []string
	for i := 0; i < size.members+size.others; i++ {
		pid := fmt.Sprintf("p%06d", i)
		p := fmt.Sprintf(`{"resourceType":"Patient","id":%q,"meta":{"lastUpdated":"2025-02-01T00:00:00Z"},"name":[{"family":"Scale","given":["P%d"]}]}`, pid, i)
		pats.WriteString(p + "\n")
		member := i < size.members
		active := i%97 != 5
		if member {
			members = append(members, fmt.Sprintf(`{"entity":{"reference":"Patient/%s"}%s}`, pid, map[bool]string{true: "", false: `,"inactive":true`}[active]))
		}
		if member && active {
			want["Patient/"+pid] = []byte(p)
		}
		for k := 0; k < 2; k++ {
			oid := pid + "-o" + strconv.Itoa(k)
			o := fmt.Sprintf(`{"resourceType":"Observation","id":%q,"meta":{"lastUpdated":"2025-02-02T00:00:00Z"},"status":"final","code":{"text":"group %d"},"subject":{"reference":"Patient/%s"}}`, oid, k, pid)
			obs.WriteString(o + "\n")
			if member && active {
				want["Observation/"+oid] = []byte(o)
			}
		}
	}
	group := `{"resourceType":"Group","id":"cohort","meta":{"lastUpdated":"2025-02-01T00:00:00Z"},"type":"person","actual":true,"member":[` + strings.Join(members, ",") + `]}`
	want["Group/cohort"] = []byte(group)
	for name, body := range map[string][]byte{"Patient.ndjson": pats.Bytes(), "Observation.ndjson": obs.Bytes(), "Group.ndjson": []byte(group + "\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return loadedUpstream(t, dir, 200), want
}

// requestCounter counts the AWS requests the functions make, by service
// and operation, for the cost model.
type requestCounter struct {
	mu     sync.Mutex
	counts map[string]int
	next   aws.HTTPClient
}

func (c *requestCounter) Do(r *http.Request) (*http.Response, error) {
	op := r.Header.Get("X-Amz-Target") // DynamoDB and Step Functions
	if op == "" {
		op = "s3:" + r.Method
		if r.Method == http.MethodGet && r.URL.Query().Has("list-type") {
			op = "s3:LIST"
		}
	}
	c.mu.Lock()
	c.counts[op]++
	c.mu.Unlock()
	return c.next.Do(r)
}

func (c *requestCounter) reset() {
	c.mu.Lock()
	c.counts = map[string]int{}
	c.mu.Unlock()
}

func (c *requestCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	keys := make([]string, 0, len(c.counts))
	for k := range c.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out[strings.TrimPrefix(k, "DynamoDB_20120810.")] = c.counts[k]
	}
	return out
}
