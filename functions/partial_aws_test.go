package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/settings"
	"github.com/bulkfhir/bulkfhir/shared/waitfor"
)

// awsPage is one manifest page read through the status route.
type awsPage struct {
	status int
	m      manifest
	files  []string // "kind path count" of every item
	bytes  int
}

func statusPage(t *testing.T, job, cursor string) awsPage {
	t.Helper()
	query := ""
	if cursor != "" {
		query = api.PageParam + "=" + url.QueryEscape(cursor)
	}
	r := apiRequest(t, http.MethodGet, "/fhir/bulkstatus/"+job, query, "", "")
	p := awsPage{status: r.StatusCode, bytes: len(r.Body)}
	if r.StatusCode != http.StatusOK && r.StatusCode != http.StatusAccepted {
		t.Fatalf("status page %q of %s = %d: %.300s", cursor, job, r.StatusCode, r.Body)
	}
	if r.Body == "" {
		return p
	}
	if err := json.Unmarshal([]byte(r.Body), &p.m); err != nil {
		t.Fatalf("page %q: %v", cursor, err)
	}
	add := func(kind string, list []bulkdata.ManifestFile) {
		for _, e := range list {
			u, err := url.Parse(e.URL)
			if err != nil {
				t.Fatal(err)
			}
			c := int64(-1)
			if e.Count != nil {
				c = *e.Count
			}
			p.files = append(p.files, fmt.Sprintf("%s %s %d", kind, u.Path, c))
		}
	}
	add("output", p.m.Output)
	add("error", p.m.Error)
	add("deleted", p.m.Deleted)
	return p
}

// awsItems lists each page's items, for exporttest.ComparePages.
func awsItems(pages []awsPage) [][]string {
	out := make([][]string, len(pages))
	for i, p := range pages {
		out[i] = p.files
	}
	return out
}

// walkPages follows next links from the first page; the cursor of a next
// link is its page query parameter.
func walkPages(t *testing.T, job string) []awsPage {
	t.Helper()
	var pages []awsPage
	cursor := ""
	for {
		p := statusPage(t, job, cursor)
		pages = append(pages, p)
		next := p.m.Next()
		if next == "" {
			return pages
		}
		if !strings.HasPrefix(next, publicBase+"/bulkstatus/"+job+"?") {
			t.Fatalf("next link %q is not a page of the status URL", next)
		}
		u, err := url.Parse(next)
		if err != nil {
			t.Fatal(err)
		}
		cursor = u.Query().Get(api.PageParam)
		if len(pages) > 100000 {
			t.Fatal("next links do not end")
		}
	}
}

// TestPartialManifestsOnAWS: through the status Lambda, a running export
// that allows partial manifests shows the pages of the types done so far;
// the pages do not change when the export completes; their union is the
// source, each file once, and the same files as the unpaged manifest.
func TestPartialManifestsOnAWS(t *testing.T) {
	cl := need(t)
	const pageSize = 2
	cl.withEnv(t, map[string]string{settings.EnvManifestPageSize: fmt.Sprint(pageSize)})
	gate := make(chan struct{})
	release := sync.OnceFunc(func() { close(gate) })
	cl.mu.Lock()
	cl.block["Patient.0000"] = gate
	cl.mu.Unlock()
	t.Cleanup(func() { cl.mu.Lock(); delete(cl.block, "Patient.0000"); cl.mu.Unlock(); release() })

	job := kickoff(t, http.MethodGet, "/fhir/$export", "allowPartialManifests=true", "")
	var running []awsPage
	if !waitfor.Condition(waitLimit, 100*time.Millisecond, func() bool {
		first := statusPage(t, job, "")
		if first.status != http.StatusAccepted {
			t.Fatalf("status %d while Patient.0000 is held", first.status)
		}
		if len(first.files) == 0 {
			return false
		}
		running = walkPages(t, job)
		return len(running) >= 2
	}) {
		t.Fatal("no partial manifest of two pages while the export ran")
	}
	for i, p := range running {
		if p.status != http.StatusAccepted || len(p.files) == 0 || len(p.files) > pageSize {
			t.Errorf("running page %d: status %d, %d items; want 202 with 1..%d", i, p.status, len(p.files), pageSize)
		}
		for _, o := range p.m.Output {
			if o.Type >= "Patient" {
				t.Errorf("running page %d lists a %s file while Patient.0000 is held", i, o.Type)
			}
		}
	}
	release()
	waitDone(t, job)
	pages := walkPages(t, job)
	var union manifest
	for i, p := range pages {
		if p.m.TransactionTime != pages[0].m.TransactionTime || p.m.Request != pages[0].m.Request {
			t.Errorf("page %d fields differ from the first page's", i)
		}
		union.Output = append(union.Output, p.m.Output...)
	}
	exporttest.ComparePages(t, awsItems(running), awsItems(pages), pageSize)
	exporttest.SameSet(t, download(t, union), exporttest.ReadResources(t, cl.dataDir))

	plain := completed(t, kickoff(t, http.MethodGet, "/fhir/$export", "", ""))
	shape := func(list []bulkdata.ManifestFile) string {
		var out []string
		for _, o := range list {
			out = append(out, fmt.Sprintf("%s %d %d", o.Type, *o.Count, *o.FileSize))
		}
		sort.Strings(out)
		return strings.Join(out, "|")
	}
	if a, b := shape(union.Output), shape(plain.Output); a != b {
		t.Errorf("paged files differ from the unpaged manifest:\n%s\n%s", a, b)
	}
}

// TestPagedManifestOfManyFilesOnAWS: a job with more files than an
// unpaged manifest of presigned links fits in the status Lambda's 6 MB
// response is served page by page to a client that allows partial
// manifests, each file once (the same files unpaged:
// TestManifestOverTheLambdaLimitOnAWS).
func TestPagedManifestOfManyFilesOnAWS(t *testing.T) {
	cl := need(t)
	const files = 15000
	start := time.Now()
	paged := manyFilesJob(t, cl, files, true)
	t.Logf("%d file records written in %v", files, time.Since(start).Round(time.Millisecond))
	cl.takeCrossed()
	pages := walkPages(t, paged)
	seen := map[string]bool{}
	largest := 0
	for i, p := range pages {
		if p.status != http.StatusOK || len(p.files) > export.DefaultManifestPageSize {
			t.Errorf("page %d: status %d, %d items", i, p.status, len(p.files))
		}
		largest = max(largest, p.bytes)
		for _, f := range p.files {
			if seen[f] {
				t.Errorf("%s listed twice", f)
			}
			seen[f] = true
		}
	}
	if len(seen) != files || len(pages) != files/export.DefaultManifestPageSize {
		t.Errorf("%d pages list %d files, want %d pages of %d files", len(pages), len(seen), files/export.DefaultManifestPageSize, files)
	}
	if c := cl.takeCrossed(); len(c) != 0 {
		t.Errorf("a page crossed a limit: %v", c)
	}
	t.Logf("%d pages, the largest %d bytes", len(pages), largest)
}

// manyFilesJob is a completed system export with files one-line
// Observation file records in 15 units on DynamoDB Local (no objects:
// the manifest is built from the records), paged or not.
func manyFilesJob(t *testing.T, cl *cluster, files int, paged bool) string {
	t.Helper()
	return exporttest.CompletedWithFiles(t, cl.api.Jobs, api.AnonymousClient, publicBase+"/$export", files, 15, paged)
}

// TestOrganizeOutputByPatientOnAWS: through the state machine, on the S3
// NDJSON source, a Patient export organized by Patient writes well-formed
// blocks with exactly the patients' compartments, split blocks linked by
// continuesInFile, its units resuming from cursors chunk after chunk; with
// allowPartialManifests its pages list every file once.
func TestOrganizeOutputByPatientOnAWS(t *testing.T) {
	cl := need(t)
	cl.withEnv(t, map[string]string{settings.EnvMaxFileBytes: "30000", settings.EnvManifestPageSize: "5"})
	src := exporttest.ReadResources(t, cl.dataDir)
	cl.mu.Lock()
	before := cl.invocations["export"]
	cl.mu.Unlock()
	job := kickoff(t, http.MethodGet, "/fhir/Patient/$export", "organizeOutputBy=Patient&allowPartialManifests=true", "")
	if r := waitDone(t, job); r.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", r.StatusCode, r.Body)
	}
	cl.mu.Lock()
	chunks := cl.invocations["export"] - before
	cl.mu.Unlock()
	if j, err := cl.api.Jobs.Get(context.Background(), job); err != nil || j.Plan == nil || chunks <= j.Plan.Units {
		t.Errorf("%d export invocations for the plan %+v; want the blocks units to resume from cursors (the harness's chunk budget is 1ns)", chunks, j.Plan)
	}
	var files []exporttest.OrganizedFile
	pages := walkPages(t, job)
	for _, p := range pages {
		if p.m.OutputOrganizedBy != "Patient" {
			t.Errorf("outputOrganizedBy = %q", p.m.OutputOrganizedBy)
		}
		for _, o := range p.m.Output {
			if o.Type != "" {
				t.Errorf("output item with type %q", o.Type)
			}
			resp, err := http.Get(o.URL)
			if err != nil {
				t.Fatal(err)
			}
			var body strings.Builder
			_, err = io.Copy(&body, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("GET presigned %s = %d, %v", o.URL, resp.StatusCode, err)
			}
			files = append(files, exporttest.OrganizedFile{URL: o.URL, ContinuesInFile: o.ContinuesInFile, Body: []byte(body.String())})
		}
	}
	got, splits := exporttest.CheckBlocks(t, files)
	t.Logf("%d resources in %d files, %d split blocks, %d export invocations", len(got), len(files), splits, chunks)
	all := map[string]bool{}
	for key := range src {
		if id, ok := strings.CutPrefix(key, "Patient/"); ok {
			all[id] = true
		}
	}
	exporttest.SameSet(t, got, exporttest.ExpectedCompartment(src, all))
	if splits == 0 || len(pages) < 2 {
		t.Errorf("%d split blocks over %d pages; want both above one", splits, len(pages))
	}
}
