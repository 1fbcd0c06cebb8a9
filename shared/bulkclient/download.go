package bulkclient

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// downloadAll fetches every file of the manifest with Parallel workers.
func (c *Client) downloadAll(ctx context.Context, m *Manifest) (*Summary, error) {
	jobs := plan(m)
	for _, d := range []string{"error", "deleted"} {
		if err := os.MkdirAll(filepath.Join(c.opts.OutDir, d), 0o755); err != nil {
			return nil, fail("output directory: %v", err)
		}
	}
	var total int64 = -1
	if known(m.Output) {
		total = 0
		for _, e := range m.Output {
			total += *e.Count
		}
	}
	c.rep.Downloads(len(jobs), total)
	sum := &Summary{RequiresAccessToken: m.RequiresAccessToken}
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
				res := c.download(ctx, j, m.RequiresAccessToken)
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
	c.rep.DownloadsDone()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return sum, nil
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
	job     job
	lines   int64
	bytes   int64
	skipped bool
	issues  []issue
	err     error
}

// download fetches one file into OutDir/name: streamed, gunzipped when the
// server compressed it, every line checked to be a JSON object, the line
// count checked against count, written to a .part file and renamed when
// complete. With Resume a complete file is kept.
func (c *Client) download(ctx context.Context, j job, withToken bool) fileResult {
	res := fileResult{job: j}
	final := filepath.Join(c.opts.OutDir, filepath.FromSlash(j.name))
	if c.opts.Resume {
		if n, size, err := countLines(final); err == nil && (j.entry.Count == nil || *j.entry.Count == n) {
			res.lines, res.bytes, res.skipped = n, size, true
			if j.kind == "error" {
				res.issues, _ = readIssues(final)
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
		if withToken {
			c.authorize(req) // only when the manifest says downloads need it
		}
		return req, nil
	})
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		res.err = fail("download %s: %s", j.name, describe(resp))
		return res
	}
	var body io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			res.err = fail("download %s: bad gzip stream: %v", j.name, err)
			return res
		}
		defer zr.Close()
		body = zr
	}
	part := final + ".part"
	f, err := os.Create(part)
	if err != nil {
		res.err = fail("download %s: %v", j.name, err)
		return res
	}
	bar := c.rep.FileStarted(j.name, j.entry.Count)
	err = func() error {
		w := bufio.NewWriterSize(f, 256<<10)
		br := bufio.NewReaderSize(body, 256<<10)
		last := time.Now()
		var pendLines, pendBytes int64
		for {
			line, err := br.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				long := append([]byte(nil), line...)
				for errors.Is(err, bufio.ErrBufferFull) {
					line, err = br.ReadSlice('\n')
					long = append(long, line...)
				}
				line = long
			}
			if len(line) > 0 {
				if _, werr := w.Write(line); werr != nil {
					return werr
				}
				res.bytes += int64(len(line))
				pendBytes += int64(len(line))
				trimmed := bytes.TrimSpace(line)
				if len(trimmed) > 0 {
					if trimmed[0] != '{' || !json.Valid(trimmed) {
						return fail("download %s: line %d is not a JSON resource (is this NDJSON?)", j.name, res.lines+1)
					}
					res.lines++
					pendLines++
					if j.kind == "error" {
						res.issues = appendIssues(res.issues, trimmed)
					}
				}
				if pendLines >= 1000 || time.Since(last) > 200*time.Millisecond {
					bar.Add(pendLines, pendBytes)
					pendLines, pendBytes, last = 0, 0, time.Now()
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fail("download %s: %v", j.name, err)
			}
		}
		bar.Add(pendLines, pendBytes)
		if err := w.Flush(); err != nil {
			return err
		}
		return f.Sync()
	}()
	f.Close()
	if err == nil && j.entry.Count != nil && *j.entry.Count != res.lines {
		err = fail("download %s: %d resources, but the manifest says %d", j.name, res.lines, *j.entry.Count)
	}
	if err == nil {
		err = os.Rename(part, final)
	}
	bar.Done(err)
	if err != nil {
		os.Remove(part)
		var e *Error
		if !errors.As(err, &e) && !errors.Is(err, context.Canceled) {
			err = fail("download %s: %v", j.name, err)
		}
		res.err = err
		return res
	}
	c.rep.FileDone(j.name, res.lines, res.bytes, false)
	return res
}

// countLines counts the non-blank lines of a complete file.
func countLines(path string) (n, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 512<<20)
	for sc.Scan() {
		size += int64(len(sc.Bytes())) + 1
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			n++
		}
	}
	return n, size, sc.Err()
}

func readIssues(path string) ([]issue, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []issue
	for _, l := range bytes.Split(b, []byte("\n")) {
		if l = bytes.TrimSpace(l); len(l) > 0 {
			out = appendIssues(out, l)
		}
	}
	return out, nil
}

type issue struct{ severity, code, diagnostics string }

func appendIssues(list []issue, line []byte) []issue {
	var oo struct {
		Issue []struct{ Severity, Code, Diagnostics string } `json:"issue"`
	}
	if json.Unmarshal(line, &oo) != nil {
		return list
	}
	for _, is := range oo.Issue {
		list = append(list, issue{is.Severity, is.Code, is.Diagnostics})
	}
	return list
}
