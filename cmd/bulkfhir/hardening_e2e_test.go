package main

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/diskspace"
	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
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
		{"lenient unsupported _typeFilter", "GET", b + "/$export?_type=Observation&_typeFilter=Observation%3Fstatus%3Dfinal%26code%3Ain%3Dx", lenient, "", 400, "code:in"},
		// Lenient drops the whole filter and, with it, its only type:
		// nothing is left, so the kick-off is refused (a filter dropped
		// beside other types leaves its type out; see the export tests).
		{"lenient _typeFilter on an unknown search parameter", "GET", b + "/$export?_type=Observation&_typeFilter=Observation%3Fno-such%3D1", lenient, "", 400, "no-such"},
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

// TestLiveJobCapHoldsUnderConcurrentKickoffs: 50 simultaneous kick-offs of
// one client with --max-live-jobs 5 get exactly 5 × 202 and 45 × 429, and a
// kick-off right after a DELETE gets 202. The upstream holds every search
// until the test ends, so no job can finish and free a place by itself.
func TestLiveJobCapHoldsUnderConcurrentKickoffs(t *testing.T) {
	upstream, open := heldUpstream(t)
	s := startServer(t, "", "--source-url", upstream, "--max-live-jobs", "5")
	t.Cleanup(open) // runs before the server stops
	const n = 50
	statuses := make([]int, n)
	locations := make([]string, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest(http.MethodGet, s.base+"/$export", nil)
			req.Header = kickHeaders()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("kick-off %d: %v", i, err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
			locations[i] = resp.Header.Get("Content-Location")
		}(i)
	}
	close(start)
	wg.Wait()
	count := map[int]int{}
	first := ""
	for i, st := range statuses {
		count[st]++
		if st == http.StatusAccepted && first == "" {
			first = locations[i]
		}
	}
	if count[http.StatusAccepted] != 5 || count[http.StatusTooManyRequests] != n-5 {
		t.Fatalf("statuses = %v, want 5 × 202 and %d × 429", count, n-5)
	}
	requireOutcome(t, do(t, http.MethodGet, s.base+"/$export", kickHeaders(), ""), http.StatusTooManyRequests, "5 exports")
	if d := do(t, http.MethodDelete, first, nil, ""); d.status != http.StatusAccepted {
		t.Fatalf("DELETE = %d: %s", d.status, d.body)
	}
	kickoff(t, http.MethodGet, s.base+"/$export", kickHeaders(), "")
	requireOutcome(t, do(t, http.MethodGet, s.base+"/$export", kickHeaders(), ""), http.StatusTooManyRequests, "")
}

// TestDownloadRangeErrors: a bad or abusive Range on a download link is a
// 416 OperationOutcome, and at most a few ranges are served per request.
func TestDownloadRangeErrors(t *testing.T) {
	s := startServer(t, dataDir)
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), ""), nil)
	if len(m.Output) == 0 {
		t.Fatal("no output")
	}
	link := m.Output[0].URL
	for _, tc := range []struct {
		name, rng string
		status    int
		want      string
	}{
		{"2000 one-byte ranges", "bytes=" + strings.Repeat("0-0,", 1999) + "0-0", 416, "at most 4 ranges"},
		{"past the end", "bytes=999999999-", 416, "no range starts inside"},
		{"garbage", "bytes=x-y", 416, "not a byte range"},
		{"other unit", "lines=1-2", 416, "only bytes ranges"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireOutcome(t, do(t, http.MethodGet, link, http.Header{"Range": {tc.rng}}, ""), tc.status, tc.want)
		})
	}
	r := do(t, http.MethodGet, link, http.Header{"Range": {"bytes=0-9"}}, "")
	if r.status != http.StatusPartialContent || len(r.body) != 10 {
		t.Errorf("bytes=0-9: %d, %d bytes", r.status, len(r.body))
	}
	// The link's query is read by the strict parser too.
	requireOutcome(t, do(t, http.MethodGet, link+";x", nil, ""), 400, "';'")
}

// TestServerLimits: oversized headers, slow bodies and connection floods
// are bounded by settings.
func TestServerLimits(t *testing.T) {
	s := startServer(t, dataDir, "--max-header-bytes", "4096", "--read-timeout", "1s", "--max-connections", "3")

	t.Run("header too large", func(t *testing.T) {
		for _, size := range []int{1000, 16 << 10} {
			c, err := net.Dial("tcp", s.addr)
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", size) + "\r\n\r\n"))
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			c.Close()
			switch {
			case size < 4096 && (err != nil || resp.StatusCode != http.StatusOK):
				t.Errorf("%d-byte header: %v %v, want 200", size, resp, err)
			case size > 4096 && err == nil && resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge:
				// The server may also hang up before the reply is read.
				t.Errorf("%d-byte header: status %d, want 431", size, resp.StatusCode)
			}
		}
	})
	t.Run("slow body is cut off", func(t *testing.T) {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Headers promise 1000 bytes of body; 10 arrive, then nothing.
		_, err = c.Write([]byte("POST /fhir/$export HTTP/1.1\r\nHost: x\r\nAccept: application/fhir+json\r\nPrefer: respond-async\r\n" +
			"Content-Type: application/fhir+json\r\nContent-Length: 1000\r\n\r\n{\"resourceT"))
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second)) // a safety net, far above --read-timeout
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer to a stalled body: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("status = %d, want 400", resp.StatusCode)
		}
	})
	t.Run("connections are capped", func(t *testing.T) {
		var held []net.Conn
		for i := 0; i < 3; i++ {
			c, err := net.Dial("tcp", s.addr)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, c)
		}
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		// Make sure the server has accepted the three: each answers.
		for _, c := range held {
			if _, err := c.Write([]byte("GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		fourth, err := net.Dial("tcp", s.addr) // completes in the kernel's backlog
		if err != nil {
			t.Fatal(err)
		}
		defer fourth.Close()
		if _, err := fourth.Write([]byte("GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(fourth)
		fourth.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := br.Peek(1); err == nil {
			t.Fatal("a fourth connection was served while three were open")
		} else if ne := (net.Error)(nil); !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("fourth connection: %v, want no answer yet", err)
		}
		held[0].Close()
		held = held[1:]
		fourth.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("fourth connection not served after one closed: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status = %d", resp.StatusCode)
		}
	})
}

// TestOddEntriesInDataAreSkipped: a FIFO, a broken symbolic link and a
// directory named like a file in --data are reported at start-up and
// skipped; the server starts and exports the rest.
func TestOddEntriesInDataAreSkipped(t *testing.T) {
	data := t.TempDir()
	src, err := os.ReadFile(filepath.Join(dataDir, "Patient.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "Patient.ndjson"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(data, "Observation.ndjson"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(data, "missing"), filepath.Join(data, "Condition.ndjson")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(data, "Encounter.ndjson"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, data)
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export", kickHeaders(), ""), nil)
	if len(m.Output) != 1 || m.Output[0].Type != "Patient" {
		t.Errorf("output = %+v, want the Patient file only", m.Output)
	}
	log := s.log.String()
	for _, want := range []string{"Observation.ndjson: not a regular file", "Condition.ndjson: broken symbolic link"} {
		if !strings.Contains(log, want) {
			t.Errorf("start-up log does not report %q:\n%s", want, log)
		}
	}
}

// TestMetadataCacheFollowsTheSource: /metadata is cached, and a change to
// --data that an export has seen shows in the next CapabilityStatement.
func TestMetadataCacheFollowsTheSource(t *testing.T) {
	data := t.TempDir()
	for _, name := range []string{"Patient.ndjson", "Group.ndjson"} {
		b, err := os.ReadFile(filepath.Join(dataDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(data, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := startServer(t, data)
	lists := func(typ string) bool {
		r := do(t, http.MethodGet, s.base+"/metadata", nil, "")
		if r.status != 200 {
			t.Fatalf("metadata = %d", r.status)
		}
		return strings.Contains(string(r.body), `"type":"`+typ+`"`)
	}
	if lists("Condition") {
		t.Fatal("Condition listed before there is any")
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "Condition.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "Condition.ndjson"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_type=Condition", kickHeaders(), ""), nil)
	if len(m.Output) == 0 {
		t.Fatal("the new Condition file was not exported")
	}
	if !lists("Condition") {
		t.Error("metadata does not list Condition after an export read it")
	}
}

// TestCrashDebrisAndDamagedStore: at start-up temporary files of an earlier
// run and files without a job are removed; a damaged jobs.db stops the
// server with one error line naming --repair, and --repair brings it back
// with the jobs that could be read.
func TestCrashDebrisAndDamagedStore(t *testing.T) {
	s := startServer(t, dataDir)
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), ""), nil)
	s.stop()

	tmp := filepath.Join(s.state, "files", ".tmp", "part-crashed")
	orphan := filepath.Join(s.state, "files", "0123456789abcdef0123456789abcdef")
	if err := os.WriteFile(tmp, []byte("half a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(orphan, "Patient.0000"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(orphan, "Patient.0000", "Patient.0000.ndjson"), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start()
	for _, p := range []string{tmp, orphan} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived the restart: %v", p, err)
		}
	}
	if r := do(t, http.MethodGet, m.Output[0].URL, nil, ""); r.status != 200 {
		t.Errorf("a completed job's file is gone after the sweep: %d", r.status)
	}
	s.stop()

	// Tear the pages that hold the job record (every copy: some may be
	// free pages, old versions of it).
	db := filepath.Join(s.state, "jobs.db")
	f, err := os.OpenFile(db, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	buf := make([]byte, 4096)
	torn := false
	for off := int64(2 * 4096); off < st.Size(); off += 4096 {
		f.ReadAt(buf, off)
		if strings.Contains(string(buf), "_type=Patient") {
			f.WriteAt([]byte(strings.Repeat("\xff", 16)), off)
			torn = true
		}
	}
	f.Close()
	if !torn {
		t.Fatal("no page with the job record")
	}
	out, err := exec.Command(binPath, "serve", "--addr", s.addr, "--state", s.state, "--data", dataDir).CombinedOutput()
	if err == nil {
		t.Fatalf("served on a damaged store: %s", out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(last, "damaged") || !strings.Contains(last, "--repair") || strings.Contains(string(out), "goroutine ") {
		t.Errorf("damaged store: want one error line naming --repair, no panic; got:\n%s", out)
	}
	s.args = append(s.args, "--repair")
	s.start()
	if !strings.Contains(s.log.String(), "job store repaired") {
		t.Errorf("--repair did not report what it did:\n%s", s.log)
	}
	matches, _ := filepath.Glob(db + ".damaged-*")
	if len(matches) != 1 {
		t.Errorf("damaged file kept aside: %v", matches)
	}
	// The server works again.
	waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), ""), nil)
}

// TestFullDisk fills a small real filesystem (a 4 MB tmpfs, mounted for the
// test; it needs root) mid-export: the job fails with an OperationOutcome,
// the server stays up, DELETE works while the disk is full, kick-offs are
// refused with 503 below the reserve, and exports work again once space is
// freed.
func TestFullDisk(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v %s", err, out)
		}
	})
	fill := func(name string, leave int64) {
		t.Helper()
		free, err := diskspace.Free(mnt)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(filepath.Join(mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		chunk := make([]byte, 64<<10)
		for n := free - leave; n > 0; n -= int64(len(chunk)) {
			if _, err := f.Write(chunk[:min(int64(len(chunk)), n)]); err != nil {
				return // full
			}
		}
	}
	s := &server{t: t, addr: freeAddr(t), state: filepath.Join(mnt, "state"), data: dataDir, args: []string{"--reserve-bytes", "0"}}
	s.base = "http://" + s.addr + "/fhir"
	s.start()
	t.Cleanup(s.stop) // before the unmount

	// 1. The disk fills mid-export (no reserve): the job fails, with an
	// OperationOutcome, and the server stays up.
	fill("filler-1", 160<<10) // less than the export, stored compressed
	loc := kickoff(t, http.MethodGet, s.base+"/$export", kickHeaders(), "")
	r := waitDone(t, loc, nil)
	requireOutcome(t, r, http.StatusInternalServerError, "failed")
	if m := do(t, http.MethodGet, s.base+"/metadata", nil, ""); m.status != 200 {
		t.Fatalf("server not answering after the disk filled: %d", m.status)
	}
	// 2. DELETE works with the disk full to the last byte.
	fill("filler-2", 0)
	if d := do(t, http.MethodDelete, loc, nil, ""); d.status != http.StatusAccepted {
		t.Fatalf("DELETE on a full disk = %d: %s", d.status, d.body)
	}
	requireOutcome(t, do(t, http.MethodGet, loc, nil, ""), http.StatusNotFound, "")

	// 3. With a reserve, a kick-off below it is a 503 with Retry-After.
	s.stop()
	os.Remove(filepath.Join(mnt, "filler-2"))
	fill("filler-2", 256<<10)
	s.args = []string{"--reserve-bytes", "1048576"}
	s.start()
	r = do(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), "")
	requireOutcome(t, r, http.StatusServiceUnavailable, "low on storage")
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	// 4. Space freed: exports work again.
	os.Remove(filepath.Join(mnt, "filler-1"))
	os.Remove(filepath.Join(mnt, "filler-2"))
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), ""), nil)
	if len(m.Output) != 1 {
		t.Errorf("output after freeing space = %+v", m.Output)
	}
}

// TestStorageQuotaPerClient: with --quota-bytes, a client whose stored
// exports reach the quota gets 429 until it deletes one.
func TestStorageQuotaPerClient(t *testing.T) {
	s := startServer(t, dataDir, "--quota-bytes", "1")
	loc := kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), "")
	waitManifest(t, loc, nil)
	r := do(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), "")
	requireOutcome(t, r, http.StatusTooManyRequests, "storage quota")
	if r.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	if d := do(t, http.MethodDelete, loc, nil, ""); d.status != http.StatusAccepted {
		t.Fatalf("DELETE = %d", d.status)
	}
	kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), "")
}

// TestUpstreamThatIgnoresFiltersIsNotTrusted: an upstream that ignores the
// compartment search parameters (answering every search with the whole
// type) cannot widen a Patient export: bulkfhir checks each resource's
// compartment itself, so a known patient gets its compartment and an
// unknown one nothing.
func TestUpstreamThatIgnoresFiltersIsNotTrusted(t *testing.T) {
	fs := fhirtest.New(fhirtest.Options{})
	if err := fs.LoadDir(dataDir); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		for name := range q {
			if !strings.HasPrefix(name, "_") || name == "_id" {
				q.Del(name) // ignored, as a careless server would
			}
		}
		r.URL.RawQuery = q.Encode()
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	s := startServer(t, "", "--source-url", hs.URL)
	src := sourceResources(t, dataDir)
	var one string
	for id := range groupMembers(t, src, "small-cohort") {
		one = id
		break
	}
	body := func(ids ...string) string {
		var ps []string
		for _, id := range ids {
			ps = append(ps, `{"name":"patient","valueReference":{"reference":"Patient/`+id+`"}}`)
		}
		return `{"resourceType":"Parameters","parameter":[` + strings.Join(ps, ",") + `]}`
	}
	m := waitManifest(t, kickoff(t, http.MethodPost, s.base+"/Patient/$export", kickHeaders(), body(one)), nil)
	sameSet(t, download(t, m), expectedCompartment(src, map[string]bool{one: true}))
	m = waitManifest(t, kickoff(t, http.MethodPost, s.base+"/Patient/$export", kickHeaders(), body("nobody")), nil)
	if got := download(t, m); len(got) != 0 {
		t.Errorf("an unknown patient exported %d resources, want none", len(got))
	}
}
