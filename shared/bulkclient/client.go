// Package bulkclient is a FHIR Bulk Data Access client: kick-off (GET or
// POST), polling that honours Retry-After, parallel downloads of every
// output, error and deleted file, and a summary. It works against any Bulk
// Data v2 server. Transient failures (429, 5xx, network errors) are retried
// with bounded exponential backoff; the bearer token goes only where the
// manifest says downloads need it.
package bulkclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Options describe one export.
type Options struct {
	Server                string // FHIR base URL
	Level                 string // system, patient or group
	Group                 string
	Types                 []string
	Since, Until          string
	Elements              []string
	TypeFilters           []string
	Patients              []string
	IncludeAssociatedData []string
	Post                  bool
	Lenient               bool
	Token                 string
	// Tokens, when set, logs in (SMART Backend Services) instead of Token.
	Tokens        TokenSource
	OutDir        string
	Parallel      int
	Resume        bool
	CancelOnAbort bool
	// MaxRetries bounds retries of one request; MaxWait caps one wait.
	MaxRetries int
	MaxWait    time.Duration
}

// Client runs exports.
type Client struct {
	opts Options
	http *http.Client
	rep  Reporter
	// reached is set once any HTTP response arrived: before that a refused
	// connection means a wrong URL or a server that is down, not a blip.
	reached atomic.Bool
}

// New returns a client. httpClient may be nil; rep may be nil (silent).
func New(opts Options, httpClient *http.Client, rep Reporter) (*Client, error) {
	if opts.Server == "" {
		return nil, errors.New("--server is required")
	}
	u, err := url.Parse(opts.Server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server %q is not an http(s) URL", opts.Server)
	}
	opts.Server = strings.TrimSuffix(opts.Server, "/")
	switch opts.Level {
	case "", "system":
		opts.Level = "system"
	case "patient":
	case "group":
		if opts.Group == "" {
			return nil, errors.New("--level group needs --group ID")
		}
	default:
		return nil, fmt.Errorf("--level %q: want system, patient or group", opts.Level)
	}
	if len(opts.Patients) > 0 {
		opts.Post = true // patient is a POST-only parameter
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = 6
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = 60 * time.Second
	}
	if opts.OutDir == "" {
		opts.OutDir = "out"
	}
	if httpClient == nil {
		httpClient = &http.Client{Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 32, DisableCompression: true,
			ResponseHeaderTimeout: 2 * time.Minute,
		}}
	}
	if rep == nil {
		rep = nopReporter{}
	}
	return &Client{opts: opts, http: httpClient, rep: rep}, nil
}

// Error is a failure the CLI prints as one line.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

func fail(format string, args ...any) error { return &Error{Msg: fmt.Sprintf(format, args...)} }

// stateFile remembers the status URL of the export that wrote into OutDir,
// so --resume continues that export (and keeps its complete files) instead
// of starting a new one.
const stateFile = ".bulkfhir-export.json"

type state struct {
	StatusURL string `json:"statusUrl"`
	Server    string `json:"server"`
}

// Run kicks off (or, with Resume, continues) an export, waits for it and
// downloads its files.
func (c *Client) Run(ctx context.Context) (*Summary, error) {
	start := time.Now()
	if err := os.MkdirAll(c.opts.OutDir, 0o755); err != nil {
		return nil, fail("output directory: %v", err)
	}
	statusURL := ""
	if c.opts.Resume {
		if b, err := os.ReadFile(filepath.Join(c.opts.OutDir, stateFile)); err == nil {
			var st state
			if json.Unmarshal(b, &st) == nil && st.Server == c.opts.Server && st.StatusURL != "" {
				statusURL = st.StatusURL
				c.rep.Logf("resuming export %s", statusURL)
			}
		}
	}
	if statusURL == "" {
		var err error
		if statusURL, err = c.kickoff(ctx); err != nil {
			return nil, err
		}
		b, _ := json.Marshal(state{StatusURL: statusURL, Server: c.opts.Server})
		if err := os.WriteFile(filepath.Join(c.opts.OutDir, stateFile), b, 0o600); err != nil {
			return nil, fail("write %s: %v", stateFile, err)
		}
	}
	raw, m, err := c.poll(ctx, statusURL)
	if err != nil {
		c.abort(statusURL, err)
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(c.opts.OutDir, "manifest.json"), raw, 0o644); err != nil {
		return nil, fail("write manifest.json: %v", err)
	}
	sum, err := c.downloadAll(ctx, m)
	if err != nil {
		c.abort(statusURL, err)
		return nil, err
	}
	sum.Wall = time.Since(start)
	sum.StatusURL = statusURL
	return sum, nil
}

// abort cancels the server-side export when the user interrupted and asked
// for it.
func (c *Client) abort(statusURL string, cause error) {
	if !c.opts.CancelOnAbort || !errors.Is(cause, context.Canceled) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, statusURL, nil)
	c.authorize(req)
	resp, err := c.http.Do(req)
	if err != nil {
		c.rep.Logf("cancel %s: %v", statusURL, err)
		return
	}
	resp.Body.Close()
	c.rep.Logf("cancelled the export on the server (%s)", resp.Status)
}

func (c *Client) authorize(req *http.Request) {
	if c.opts.Tokens != nil {
		tok, err := c.opts.Tokens.Token(req.Context())
		if err != nil {
			c.rep.Logf("login: %v", err)
			return // the server answers 401, which send reports
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		return
	}
	if c.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	}
}

// kickoffURL is the $export endpoint for the level.
func (c *Client) kickoffURL() string {
	switch c.opts.Level {
	case "patient":
		return c.opts.Server + "/Patient/$export"
	case "group":
		return c.opts.Server + "/Group/" + url.PathEscape(c.opts.Group) + "/$export"
	}
	return c.opts.Server + "/$export"
}

type kv struct{ name, value string }

func (c *Client) params() []kv {
	var p []kv
	add := func(name string, values []string, join bool) {
		if len(values) == 0 {
			return
		}
		if join {
			p = append(p, kv{name, strings.Join(values, ",")})
			return
		}
		for _, v := range values {
			p = append(p, kv{name, v})
		}
	}
	add("_type", c.opts.Types, true)
	if c.opts.Since != "" {
		p = append(p, kv{"_since", c.opts.Since})
	}
	if c.opts.Until != "" {
		p = append(p, kv{"_until", c.opts.Until})
	}
	add("_elements", c.opts.Elements, true)
	add("_typeFilter", c.opts.TypeFilters, false)
	add("includeAssociatedData", c.opts.IncludeAssociatedData, true)
	return p
}

func (c *Client) kickoff(ctx context.Context) (string, error) {
	target := c.kickoffURL()
	var body []byte
	method := http.MethodGet
	if c.opts.Post {
		method = http.MethodPost
		type param struct {
			Name           string            `json:"name"`
			ValueString    string            `json:"valueString,omitempty"`
			ValueInstant   string            `json:"valueInstant,omitempty"`
			ValueReference map[string]string `json:"valueReference,omitempty"`
		}
		var ps []param
		for _, p := range c.params() {
			switch p.name {
			case "_since", "_until":
				ps = append(ps, param{Name: p.name, ValueInstant: p.value})
			default:
				ps = append(ps, param{Name: p.name, ValueString: p.value})
			}
		}
		for _, id := range c.opts.Patients {
			ref := id
			if !strings.Contains(ref, "/") {
				ref = "Patient/" + id
			}
			ps = append(ps, param{Name: "patient", ValueReference: map[string]string{"reference": ref}})
		}
		body, _ = json.Marshal(map[string]any{"resourceType": "Parameters", "parameter": ps})
	} else if ps := c.params(); len(ps) > 0 {
		q := url.Values{}
		for _, p := range ps {
			q.Add(p.name, p.value)
		}
		target += "?" + q.Encode()
	}
	resp, err := c.send(ctx, func() (*http.Request, error) {
		var rd io.Reader
		if body != nil {
			rd = strings.NewReader(string(body))
		}
		req, err := http.NewRequestWithContext(ctx, method, target, rd)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/fhir+json")
		prefer := "respond-async"
		if c.opts.Lenient {
			prefer += ", handling=lenient"
		}
		req.Header.Set("Prefer", prefer)
		if body != nil {
			req.Header.Set("Content-Type", "application/fhir+json")
		}
		c.authorize(req)
		return req, nil
	})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return "", fail("kick-off %s %s: %s", method, target, describe(resp))
	}
	loc := resp.Header.Get("Content-Location")
	if loc == "" {
		return "", fail("kick-off: the server answered 202 without a Content-Location header")
	}
	abs, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return "", fail("kick-off: bad Content-Location %q", loc)
	}
	c.rep.Logf("export started: %s", abs)
	return abs.String(), nil
}

// poll waits for the export to finish and returns the manifest.
func (c *Client) poll(ctx context.Context, statusURL string) ([]byte, *Manifest, error) {
	misses, renewed := 0, false
	// The kick-off reply carries no Retry-After; a first look soon after it
	// finishes small exports without a full polling interval.
	if err := sleep(ctx, 200*time.Millisecond); err != nil {
		return nil, nil, err
	}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, statusURL, nil)
		if err != nil {
			return nil, nil, fail("status URL %q: %v", statusURL, err)
		}
		req.Header.Set("Accept", "application/json")
		c.authorize(req)
		resp, err := c.http.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			if misses++; misses > c.opts.MaxRetries {
				return nil, nil, fail("status %s: server unreachable: %v", statusURL, err)
			}
			if err := sleep(ctx, backoff(misses, c.opts.MaxWait)); err != nil {
				return nil, nil, err
			}
			continue
		}
		if c.renewAfter401(resp, req, &renewed) {
			continue
		}
		switch {
		case resp.StatusCode == http.StatusOK && resp.Header.Get("X-Export-Status") != "" && !strings.HasPrefix(resp.Header.Get("X-Export-Status"), "200"):
			// separate-export-status: the job state is in the header.
			st := resp.Header.Get("X-Export-Status")
			resp.Body.Close()
			if !strings.HasPrefix(st, "202") {
				return nil, nil, fail("export failed: %s", st)
			}
			c.rep.Polling(resp.Header.Get("X-Progress"))
			if err := sleep(ctx, retryAfter(resp.Header, 0, c.opts.MaxWait)); err != nil {
				return nil, nil, err
			}
		case resp.StatusCode == http.StatusOK:
			raw, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
			resp.Body.Close()
			if err != nil {
				return nil, nil, fail("read manifest: %v", err)
			}
			m, err := parseManifest(raw)
			if err != nil {
				return nil, nil, err
			}
			return raw, m, nil
		case resp.StatusCode == http.StatusAccepted:
			misses = 0
			c.rep.Polling(resp.Header.Get("X-Progress"))
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if err := sleep(ctx, retryAfter(resp.Header, 0, c.opts.MaxWait)); err != nil {
				return nil, nil, err
			}
		case transientStatus(resp.StatusCode):
			msg := describe(resp)
			resp.Body.Close()
			if misses++; misses > c.opts.MaxRetries {
				return nil, nil, fail("status %s: %s (gave up after %d retries)", statusURL, msg, c.opts.MaxRetries)
			}
			c.rep.Logf("status: %s; retrying", msg)
			if err := sleep(ctx, retryAfter(resp.Header, misses, c.opts.MaxWait)); err != nil {
				return nil, nil, err
			}
		default:
			msg := describe(resp)
			resp.Body.Close()
			return nil, nil, fail("export failed: %s", msg)
		}
	}
}

func transientStatus(code int) bool {
	return code == http.StatusTooManyRequests || code == http.StatusBadGateway ||
		code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout || code == http.StatusInternalServerError
}

// send performs a request with retries on 429, transient 5xx and network
// errors. newReq is called per attempt.
func (c *Client) send(ctx context.Context, newReq func() (*http.Request, error)) (*http.Response, error) {
	renewed := false
	for attempt := 1; ; attempt++ {
		req, err := newReq()
		if err != nil {
			return nil, fail("%v", err)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if !c.reached.Load() && unreachable(err) {
				return nil, fail("%s %s: server unreachable: %v", req.Method, req.URL.Redacted(), unwrapURLError(err))
			}
			if attempt > c.opts.MaxRetries {
				return nil, fail("%s %s: %v", req.Method, req.URL.Redacted(), unwrapURLError(err))
			}
			if err := sleep(ctx, backoff(attempt, c.opts.MaxWait)); err != nil {
				return nil, err
			}
			continue
		}
		c.reached.Store(true)
		if c.renewAfter401(resp, req, &renewed) {
			continue
		}
		if transientStatus(resp.StatusCode) && attempt <= c.opts.MaxRetries {
			wait := retryAfter(resp.Header, attempt, c.opts.MaxWait)
			c.rep.Logf("%s %s: %s; retrying in %s", req.Method, req.URL.Path, resp.Status, wait)
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if err := sleep(ctx, wait); err != nil {
				return nil, err
			}
			continue
		}
		return resp, nil
	}
}

// unreachable reports a connection that could not be made at all.
func unreachable(err error) bool {
	var dns *net.DNSError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &dns)
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// retryAfter reads Retry-After (seconds or an HTTP-date) within [0, max];
// without it, exponential backoff by attempt (1s for a 202 poll).
func retryAfter(h http.Header, attempt int, max time.Duration) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	var d time.Duration
	if v != "" {
		if secs, err := strconv.ParseFloat(v, 64); err == nil && secs >= 0 {
			d = time.Duration(secs * float64(time.Second))
		} else if t, err := http.ParseTime(v); err == nil {
			d = time.Until(t)
		} else {
			d = backoff(attempt, max)
		}
	} else {
		d = backoff(attempt, max)
	}
	if d < 0 {
		d = 0
	}
	if d > max {
		d = max
	}
	return d
}

// backoff is 1s, 2s, 4s, … capped at max.
func backoff(attempt int, max time.Duration) time.Duration {
	if attempt < 1 {
		return time.Second
	}
	d := time.Second << min(attempt-1, 10)
	if d > max {
		d = max
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// describe renders an error response in one line: the status and, for an
// OperationOutcome, its diagnostics; otherwise a snippet of the body.
func describe(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Severity    string `json:"severity"`
			Code        string `json:"code"`
			Diagnostics string `json:"diagnostics"`
		} `json:"issue"`
	}
	if json.Unmarshal(b, &oo) == nil && oo.ResourceType == "OperationOutcome" && len(oo.Issue) > 0 {
		var parts []string
		for _, is := range oo.Issue {
			parts = append(parts, strings.TrimSpace(is.Diagnostics+" ("+is.Code+")"))
		}
		return resp.Status + ": " + strings.Join(parts, "; ")
	}
	snippet := strings.Join(strings.Fields(string(b)), " ")
	if len(snippet) > 120 {
		snippet = snippet[:120] + "…"
	}
	if snippet == "" {
		return resp.Status
	}
	return resp.Status + " (not a FHIR OperationOutcome): " + snippet
}
