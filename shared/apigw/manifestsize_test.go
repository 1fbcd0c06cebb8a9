package apigw_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/apigw"
	"github.com/bulkfhir/bulkfhir/shared/bulkclient"
	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/settings"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

const host = "bulkfhirapi.execute-api.us-east-1.amazonaws.com"

// awsLinks is a file store whose links are as long as real presigned S3
// URLs signed by a role session (about 1.3 KB: the session token is
// most of it, shared by every link; the signature differs per link), and
// which answers route downloads with a 307 to such a link.
type awsLinks struct {
	*exporttest.FileStore
	// s3 is the object store's base URL ("" for a real-looking one).
	s3 string
}

var sessionToken = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ"), 15))

func (l awsLinks) URL(_ context.Context, key string, _ time.Time) (string, error) {
	sig := sha256.Sum256([]byte(key))
	base := l.s3
	if base == "" {
		base = "https://bulkfhir-exports-123456789012.s3.us-east-1.amazonaws.com"
	}
	return base + "/exports/" + key +
		"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAXAMPLEXAMPLEXAMP%2F20261201%2Fus-east-1%2Fs3%2Faws4_request" +
		"&X-Amz-Date=20261201T215700Z&X-Amz-Expires=3300&X-Amz-Security-Token=" + strings.ReplaceAll(sessionToken, "+", "%2B") +
		"&X-Amz-SignedHeaders=host&x-id=GetObject&X-Amz-Signature=" + hex.EncodeToString(sig[:]), nil
}

func (s awsLinks) DeliverFile(w http.ResponseWriter, r *http.Request, key string) {
	u, _ := s.URL(r.Context(), key, time.Time{})
	http.Redirect(w, r, u, http.StatusTemporaryRedirect)
}

// completedJob is a completed, unpaged system export of files one-line
// Observation files.
func completedJob(t *testing.T, jobs *exporttest.JobStore, files int) string {
	t.Helper()
	return exporttest.CompletedWithFiles(t, jobs, api.AnonymousClient, "https://"+host+"/fhir/$export", files, 10, false)
}

// answer is a status response as a client sees it, and the size of the
// Lambda response event that carried it.
type answer struct {
	status, eventBytes int
	headers            map[string]string
	body               []byte
}

// invoke sends GET status through the gateway as API Gateway would: an
// HTTP API (payload 2.0) or REST API (proxy) event, JSON in and out.
func invoke(t *testing.T, invoke func(context.Context, json.RawMessage) (any, error), rest, gzipOK bool, path string) answer {
	t.Helper()
	hd := map[string]string{"accept": "application/fhir+json", "host": host, "x-forwarded-proto": "https"}
	if gzipOK {
		hd["accept-encoding"] = "gzip, deflate, br"
	}
	var ev any = events.APIGatewayV2HTTPRequest{Version: "2.0", RouteKey: "GET /fhir/bulkstatus/{job}", RawPath: path, Headers: hd,
		RequestContext: events.APIGatewayV2HTTPRequestContext{RequestID: "r1", DomainName: host, Stage: "$default",
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: http.MethodGet, Path: path}}}
	if rest {
		ev = events.APIGatewayProxyRequest{Resource: "/fhir/bulkstatus/{job}", Path: path, HTTPMethod: http.MethodGet, Headers: hd,
			RequestContext: events.APIGatewayProxyRequestContext{RequestID: "r1", DomainName: host, Stage: "prod"}}
	}
	raw, _ := json.Marshal(ev)
	out, err := invoke(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	// What the Lambda service measures against its 6 MB cap: the event as
	// the runtime encodes it (encoding/json without HTML escaping).
	var event bytes.Buffer
	enc := json.NewEncoder(&event)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		t.Fatal(err)
	}
	var a answer
	var body string
	var b64 bool
	switch r := out.(type) {
	case events.APIGatewayV2HTTPResponse:
		a.status, a.headers, body, b64 = r.StatusCode, r.Headers, r.Body, r.IsBase64Encoded
	case events.APIGatewayProxyResponse:
		a.status, body, b64 = r.StatusCode, r.Body, r.IsBase64Encoded
		a.headers = map[string]string{}
		for k, v := range r.MultiValueHeaders {
			a.headers[k] = v[0]
		}
		for k, v := range r.Headers {
			a.headers[k] = v
		}
	default:
		t.Fatalf("answered %T", out)
	}
	a.eventBytes, a.body = event.Len()-1, []byte(body)
	if b64 {
		if a.body, err = base64.StdEncoding.DecodeString(body); err != nil {
			t.Fatal(err)
		}
	}
	if a.headers["Content-Encoding"] == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(a.body))
		if err != nil {
			t.Fatal(err)
		}
		if a.body, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// TestManifestsOverTheLambdaLimit: a complete manifest whose presigned
// links (as long as real AWS ones) would make the status response larger
// than a Lambda may answer is sent with links to the API's download route
// (requiresAccessToken true), on both API types, with and without gzip;
// a manifest too large even so is a 406 OperationOutcome that says to ask
// for partial manifests. Every answer fits the 6 MB cap as encoded, and
// the same jobs served as before (no size check) cross it.
func TestManifestsOverTheLambdaLimit(t *testing.T) {
	jobs := exporttest.NewJobStore()
	files := awsLinks{FileStore: exporttest.NewFileStore()}
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	svc := export.NewService(jobs, files, nil, &exporttest.Source{}, export.Config{}, quiet)
	status := apigw.NewGateway(apigw.Handler(svc, apigw.Options{Auth: settings.AuthNone, StatusOnly: true, Deliver: files, Log: quiet})).Invoke
	kickoff := apigw.NewGateway(apigw.Handler(svc, apigw.Options{Auth: settings.AuthNone, Log: quiet})).Invoke
	// Today's status function: the handler with no size check.
	unchecked := apigw.NewGateway(api.New(svc, api.Config{Deliver: files, Log: quiet})).Invoke

	small, large, huge := completedJob(t, jobs, 3000), completedJob(t, jobs, 6000), completedJob(t, jobs, 40000)
	const (
		presigned = "presigned"
		route     = "route"
		refused   = "refused"
	)
	for _, tc := range []struct {
		name       string
		fn         func(context.Context, json.RawMessage) (any, error)
		job        string
		rest, gzip bool
		files      int
		want       string
	}{
		{"3,000 files, HTTP API", status, small, false, false, 3000, presigned},
		{"3,000 files, REST API", status, small, true, false, 3000, presigned},
		{"6,000 files, HTTP API", status, large, false, false, 6000, route},
		{"6,000 files, HTTP API, gzip", status, large, false, true, 6000, presigned},
		{"6,000 files, REST API", status, large, true, false, 6000, route},
		{"6,000 files, REST API, gzip", status, large, true, true, 6000, route},
		{"40,000 files, HTTP API", status, huge, false, false, 40000, refused},
		{"40,000 files, HTTP API, gzip", status, huge, false, true, 40000, presigned},
		{"40,000 files, REST API, gzip", status, huge, true, true, 40000, refused},
		{"6,000 files, a function without the download route", kickoff, large, false, false, 6000, refused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := invoke(t, tc.fn, tc.rest, tc.gzip, "/fhir/bulkstatus/"+tc.job)
			if a.eventBytes > apigw.MaxResponseBytes {
				t.Fatalf("response event of %d bytes, over the %d-byte Lambda limit", a.eventBytes, apigw.MaxResponseBytes)
			}
			if tc.want == refused {
				if a.status != http.StatusNotAcceptable || !bytes.Contains(a.body, []byte(`"OperationOutcome"`)) ||
					!bytes.Contains(a.body, []byte("allowPartialManifests=true")) || !bytes.Contains(a.body, []byte(fmt.Sprint(tc.files))) {
					t.Fatalf("status %d %.300s; want 406 with an OperationOutcome naming allowPartialManifests", a.status, a.body)
				}
				return
			}
			var m bulkdata.Manifest
			if a.status != http.StatusOK || json.Unmarshal(a.body, &m) != nil {
				t.Fatalf("status %d %.300s", a.status, a.body)
			}
			if len(m.Output) != tc.files {
				t.Errorf("%d files listed, want %d", len(m.Output), tc.files)
			}
			prefix, token := "https://bulkfhir-exports-", false
			if tc.want == route {
				prefix, token = "https://"+host+"/fhir/bulkfiles/", true
				if tc.rest {
					prefix = "https://" + host + "/prod/fhir/bulkfiles/"
				}
			}
			if m.RequiresAccessToken != token {
				t.Errorf("requiresAccessToken %v, want %v", m.RequiresAccessToken, token)
			}
			seen := map[string]bool{}
			for _, o := range m.Output {
				if !strings.HasPrefix(o.URL, prefix) {
					t.Fatalf("link %.120s: want %s links starting %s", o.URL, tc.want, prefix)
				}
				seen[o.URL] = true
			}
			if len(seen) != tc.files {
				t.Errorf("%d distinct links, want %d", len(seen), tc.files)
			}
			if tc.want == route {
				// A route link is answered by the status function: a 307
				// to a presigned link, after the usual checks.
				path := strings.TrimPrefix(m.Output[0].URL, "https://"+host)
				path = strings.TrimPrefix(path, "/prod")
				d := invoke(t, status, tc.rest, false, path)
				if d.status != http.StatusTemporaryRedirect || !strings.HasPrefix(d.headers["Location"], "https://bulkfhir-exports-") {
					t.Errorf("GET %s = %d, Location %.80q; want a 307 to a presigned link", path, d.status, d.headers["Location"])
				}
			}
			t.Logf("%s links, response event %d bytes", tc.want, a.eventBytes)
		})
	}

	// Negative control: served as before, without the size check, the
	// larger manifests cross the limit (the Lambda service would refuse
	// the response and API Gateway answer 502).
	for _, tc := range []struct {
		name       string
		job        string
		rest, gzip bool
	}{
		{"6,000 files, HTTP API", large, false, false},
		{"6,000 files, REST API, gzip", large, true, true},
		{"40,000 files, REST API", huge, true, false},
	} {
		if a := invoke(t, unchecked, tc.rest, tc.gzip, "/fhir/bulkstatus/"+tc.job); a.eventBytes <= apigw.MaxResponseBytes {
			t.Errorf("unchecked, %s: %d bytes, want over %d: the check above proves nothing", tc.name, a.eventBytes, apigw.MaxResponseBytes)
		}
	}
}

// restGateway plays API Gateway's REST API in front of an API function
// over HTTP: each request becomes a proxy event (stage prod), a response
// event over the Lambda limit is API Gateway's 502, and a base64 body is
// decoded.
func restGateway(t *testing.T, fn func(context.Context, json.RawMessage) (any, error)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := map[string]string{"X-Forwarded-Proto": "http"}
		for k, v := range r.Header {
			hd[k] = v[0]
		}
		hd["Host"] = r.Host
		q := map[string]string{}
		for k, v := range r.URL.Query() {
			q[k] = v[0]
		}
		raw, _ := json.Marshal(events.APIGatewayProxyRequest{Path: r.URL.Path, HTTPMethod: r.Method, Headers: hd, QueryStringParameters: q,
			RequestContext: events.APIGatewayProxyRequestContext{RequestID: fmt.Sprint(time.Now().UnixNano()), DomainName: r.Host, Stage: "$default"}})
		out, err := fn(r.Context(), raw)
		var event bytes.Buffer
		enc := json.NewEncoder(&event)
		enc.SetEscapeHTML(false)
		enc.Encode(out)
		resp, ok := out.(events.APIGatewayProxyResponse)
		if err != nil || !ok || event.Len()-1 > apigw.MaxResponseBytes {
			http.Error(w, `{"message":"Internal server error"}`, http.StatusBadGateway)
			return
		}
		for k, v := range resp.MultiValueHeaders {
			w.Header()[k] = v
		}
		for k, v := range resp.Headers {
			w.Header().Set(k, v)
		}
		body := []byte(resp.Body)
		if resp.IsBase64Encoded {
			body, _ = base64.StdEncoding.DecodeString(resp.Body)
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestClientGetsARouteLinkedManifest: bulkfhir export, not allowing
// partial manifests, polls a completed export of 5,000 files behind the
// REST API (no compression), whose presigned manifest would be over the
// Lambda limit: it gets the route-linked manifest, sends its token to the
// route links (requiresAccessToken), follows each 307 to the object store
// on another host without the token (an object store refuses a request
// that carries one, as S3 does next to a presigned query), and writes
// every file. Behind the handler without the size check it gets a 502.
func TestClientGetsARouteLinkedManifest(t *testing.T) {
	const files = 5000
	jobs, store := exporttest.NewJobStore(), exporttest.NewFileStore()
	var withToken atomic.Int64
	s3 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			withToken.Add(1)
			http.Error(w, "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>", http.StatusBadRequest)
			return
		}
		b, ok := store.Objects[strings.TrimPrefix(r.URL.Path, "/exports/")]
		if !ok || r.URL.Query().Get("X-Amz-Signature") == "" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/fhir+ndjson")
		w.Write(b)
	}))
	defer s3.Close()
	// Another host than the API's (127.0.0.1): clients drop Authorization
	// on a redirect to another host.
	links := awsLinks{FileStore: store, s3: strings.Replace(s3.URL, "127.0.0.1", "localhost", 1)}
	keys, err := smartauth.NewHMACKeys([]byte(strings.Repeat("k3y", 22)))
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	svc := export.NewService(jobs, links, nil, &exporttest.Source{}, export.Config{}, quiet)
	fn := apigw.NewGateway(apigw.Handler(svc, apigw.Options{Auth: settings.AuthBulkfhir, Keys: keys, StatusOnly: true, Deliver: links, Log: quiet})).Invoke
	gw := restGateway(t, fn)
	job := exporttest.CompletedWithFiles(t, jobs, "app", gw.URL+"/fhir/$export", files, 10, false)
	fs, _ := jobs.Files(context.Background(), job)
	for i, f := range fs {
		line := fmt.Sprintf(`{"resourceType":"Observation","id":"o%05d"}`, i)
		store.Objects[f.Key] = []byte(line + strings.Repeat(" ", 99-len(line)) + "\n") // 100 bytes, as recorded
	}
	token, err := keys.Sign("app", smartauth.Scopes{{Type: "*"}}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	c, err := bulkclient.New(bulkclient.Options{StatusURL: gw.URL + "/fhir/bulkstatus/" + job, Token: token, OutDir: out, Parallel: 8, MaxRetries: 2, MaxWait: 200 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := c.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !sum.RequiresAccessToken || sum.Files != files || sum.Resources != files || len(sum.Mismatches) != 0 || withToken.Load() != 0 {
		t.Fatalf("requiresAccessToken %v, %d files, %d resources, mismatches %v, %d object requests with a token; want true, %d, %d, none, 0",
			sum.RequiresAccessToken, sum.Files, sum.Resources, sum.Mismatches, withToken.Load(), files, files)
	}
	written, _ := filepath.Glob(filepath.Join(out, "Observation.*.ndjson"))
	if len(written) != files {
		t.Errorf("%d files written, want %d", len(written), files)
	}

	// Negative control: behind the status handler without the size check
	// the same client gets API Gateway's 502 and no manifest.
	unchecked := restGateway(t, apigw.NewGateway(api.New(svc, api.Config{Auth: api.Tokens{Keys: keys}, Deliver: links, Log: quiet})).Invoke)
	c, err = bulkclient.New(bulkclient.Options{StatusURL: unchecked.URL + "/fhir/bulkstatus/" + job, Token: token, OutDir: t.TempDir(),
		MaxRetries: 2, MaxWait: 200 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("without the size check: %v, want the gateway's 502", err)
	}
}
