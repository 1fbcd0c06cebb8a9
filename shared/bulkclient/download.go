package bulkclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/gzfile"
)

// gunzip decompresses a body sent with Content-Encoding: gzip, through
// gzfile (the stored files' codec); one that is not a gzip stream is an
// error, not NDJSON passed through.
func gunzip(body io.ReadCloser) (io.ReadCloser, error) {
	head := make([]byte, 2)
	if _, err := io.ReadFull(body, head); err != nil || !gzfile.IsGzip(head) {
		return nil, errors.New("not a gzip stream")
	}
	return gzfile.NewReader(struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), body), body})
}

// downloadAll fetches every file of the manifest with Parallel workers. The
// summary it returns holds the files that completed, also when it fails.
// With strict filters the error files come first: a server that says there
// that it dropped a _typeFilter stops the run before any data is fetched.
func (c *Client) downloadAll(ctx context.Context, m *Manifest) (*Summary, error) {
	jobs := plan(m)
	var total int64 = -1
	if known(m.Output) {
		total = 0
		for _, e := range m.Output {
			total += *e.Count
		}
	}
	sum := &Summary{RequiresAccessToken: m.RequiresAccessToken}
	if c.pages.early != nil {
		// Files fetched from partial manifests while the export ran.
		sum = c.pages.early
		jobs = slices.DeleteFunc(jobs, func(j job) bool { return c.pages.seen[j.name] })
	}
	jobs = c.asked(jobs, sum)
	c.rep.Downloads(len(jobs), total)
	if c.opts.StrictFilters && len(c.opts.TypeFilters) > 0 {
		var errs, rest []job
		for _, j := range jobs {
			if j.kind == "error" {
				errs = append(errs, j)
			} else {
				rest = append(rest, j)
			}
		}
		if err := c.fetch(ctx, errs, m.RequiresAccessToken, sum); err != nil {
			return sum, err
		}
		if err := c.checkFilters(sum.Errors); err != nil {
			return sum, err
		}
		jobs = rest
	}
	if err := c.fetch(ctx, jobs, m.RequiresAccessToken, sum); err != nil {
		return sum, err
	}
	if c.opts.Attachments {
		if err := c.attachments(ctx, sum); err != nil {
			return sum, err
		}
	}
	return sum, nil
}

// fetch downloads jobs in parallel and adds the complete ones to sum; the
// first failure stops the others.
func (c *Client) fetch(ctx context.Context, jobs []job, withToken bool, sum *Summary) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan job)
	results := make(chan fileResult, len(jobs))
	var wg sync.WaitGroup
	for i := 0; i < c.opts.Parallel; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				res := c.download(ctx, j, withToken)
				results <- res
				if res.err != nil {
					cancel()
				}
			}
		}()
	}
	go func() {
		defer close(work)
		for _, j := range jobs {
			select {
			case work <- j:
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	close(results)
	var firstErr error
	for r := range results {
		if r.err != nil {
			if firstErr == nil || (errors.Is(firstErr, context.Canceled) && !errors.Is(r.err, context.Canceled)) {
				firstErr = r.err
			}
			continue
		}
		sum.add(r)
	}
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// asked drops output files of types the request did not ask for: a server
// that sends them exports more than asked, and the client does not keep
// it. Each is reported (exit 3). Provenance may come with
// includeAssociatedData.
func (c *Client) asked(jobs []job, sum *Summary) []job {
	if len(c.opts.Types) == 0 {
		return jobs
	}
	var keep []job
	for _, j := range jobs {
		if j.kind != "output" || j.entry.Type == "" || slices.Contains(c.opts.Types, j.entry.Type) ||
			(j.entry.Type == "Provenance" && len(c.opts.IncludeAssociatedData) > 0) {
			keep = append(keep, j)
			continue
		}
		msg := fmt.Sprintf("%s not downloaded: the server sent %s although --type asked for %s", j.name, j.entry.Type, strings.Join(c.opts.Types, ","))
		c.rep.Logf("%s", msg)
		sum.Unasked = append(sum.Unasked, msg)
	}
	return keep
}

func known(list []Entry) bool {
	for _, e := range list {
		if e.Count == nil {
			return false
		}
	}
	return true
}

type fileResult struct {
	job      job
	lines    int64
	headers  int64 // block headers among lines (organized output)
	bytes    int64
	skipped  bool
	issues   []Issue
	mismatch string // the file's line count differs from the manifest's count
	err      error
}

// download fetches one file into the sink: streamed, gunzipped when the
// server compressed it, every line checked to be a JSON object, committed
// only when the stream ended cleanly. A line count that differs from the
// manifest's count is reported, not a reason to throw the file away (the
// SMART reference server's some_file_generation_failed case has a wrong
// count in an error file). With Resume a complete file is kept.
func (c *Client) download(ctx context.Context, j job, withToken bool) fileResult {
	res := fileResult{job: j}
	if c.opts.Resume {
		if n, size, err := countLines(ctx, c.sink, j.name); err == nil && (j.entry.Count == nil || *j.entry.Count == n || c.completeBlocks(ctx, j, n)) {
			res.lines, res.bytes, res.skipped = n, size, true
			if j.kind == "error" {
				res.issues, _ = c.readIssues(ctx, j.name)
			}
			c.rep.FileDone(j.name, n, size, true)
			return res
		}
	}
	resp, err := c.send(ctx, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.entry.URL, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/fhir+ndjson")
		req.Header.Set("Accept-Encoding", "gzip")
		return req, nil
	}, withToken) // the token only when the manifest says downloads need it
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	if (resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound) && !j.refreshed {
		// An expired link: the same file's link from a new poll.
		if u, ok := c.freshLink(ctx, j.entry.URL); ok {
			c.rep.Logf("%s: link refused (%d); retrying with a fresh link from the status URL", j.name, resp.StatusCode)
			j.entry.URL, j.refreshed = u, true
			return c.download(ctx, j, withToken)
		}
	}
	if resp.StatusCode != http.StatusOK {
		res.err = fail("download %s: %s", j.name, describe(resp))
		return res
	}
	var body io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gunzip(resp.Body)
		if err != nil {
			res.err = fail("download %s: bad gzip stream: %v", j.name, err)
			return res
		}
		defer zr.Close()
		body = zr
	}
	f, err := c.sink.Create(ctx, j.name)
	if err != nil {
		res.err = fail("download %s: %v", j.name, err)
		return res
	}
	bar := c.rep.FileStarted(j.name, j.entry.Count)
	err = func() error {
		last := time.Now()
		var pendLines, pendBytes int64
		// One pass per line: checked in the read buffer, then written
		// with its block (lines.go).
		n, err := copyLines(body, f, make([]byte, blockSize), func(line []byte) error {
			pendBytes += int64(len(line))
			trimmed := bytes.TrimSpace(line)
			if len(trimmed) > 0 {
				h, ok := fhir.Peek(trimmed)
				if !ok {
					return fail("download %s: line %d is not a JSON resource (is this NDJSON?)", j.name, res.lines+1)
				}
				if j.kind == "output" && j.entry.Type != "" && h.ResourceType != j.entry.Type {
					return fail("download %s: line %d is a %s in a file the manifest says holds %s", j.name, res.lines+1, h.ResourceType, j.entry.Type)
				}
				res.lines++
				if j.entry.Type == "" && h.ResourceType == "Parameters" {
					res.headers++
				}
				pendLines++
				if j.kind == "error" {
					res.issues = append(res.issues, outcomeIssues(trimmed)...)
				}
			}
			if pendLines >= 1000 || time.Since(last) > 200*time.Millisecond {
				bar.Add(pendLines, pendBytes)
				pendLines, pendBytes, last = 0, 0, time.Now()
			}
			return nil
		})
		res.bytes = n
		if err != nil {
			var e *Error
			switch {
			case errors.As(err, &e):
				return err
			case ctx.Err() != nil:
				return ctx.Err()
			}
			return fail("download %s: %v", j.name, err)
		}
		bar.Add(pendLines, pendBytes)
		return nil
	}()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err == nil {
		err = f.Commit()
	} else {
		f.Abort()
	}
	bar.Done(err)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) && !errors.Is(err, context.Canceled) {
			err = fail("download %s: %v", j.name, err)
		}
		res.err = err
		return res
	}
	if j.entry.Count != nil && !CountMatches(*j.entry.Count, res.lines, res.headers) {
		res.mismatch = fmtMismatch(j.name, res.lines, *j.entry.Count)
		c.rep.Logf("%s", res.mismatch)
	}
	c.rep.FileDone(j.name, res.lines, res.bytes, false)
	return res
}

func (c *Client) readIssues(ctx context.Context, name string) ([]Issue, error) {
	b, err := readFile(ctx, c.sink, name)
	if err != nil {
		return nil, err
	}
	var out []Issue
	for _, l := range bytes.Split(b, []byte("\n")) {
		if l = bytes.TrimSpace(l); len(l) > 0 {
			out = append(out, outcomeIssues(l)...)
		}
	}
	return out, nil
}
