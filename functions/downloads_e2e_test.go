package functions_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/s3store"
	"github.com/bulkfhir/bulkfhir/shared/settings"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
	"github.com/bulkfhir/bulkfhir/shared/waitfor"
)

// TestRedirectDownloadsOnAWS runs bulkfhir:downloads=redirect on the
// emulators with bulkfhir's own tokens: the manifest links to the API's
// /bulkfiles/ route (requiresAccessToken true), which the status function
// serves: the owner's token gets a 307 to a presigned link valid for
// minutes (followed here without the token, as clients do across hosts),
// no token 401, another client's token 404, scopes without the type 403.
// Each download is one audit line in the function's log.
func TestRedirectDownloadsOnAWS(t *testing.T) {
	cl := need(t)
	keys, _ := tokenKeys(t, cl)
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	redirect := map[string]string{settings.EnvDownloads: "redirect"}
	kickoffFn := tokenFunction(t, cl, lambdaenv.RoleAPI, keys, log, redirect)
	statusFn := tokenFunction(t, cl, lambdaenv.RoleStatus, keys, log, redirect)
	token := func(client string, types ...string) string {
		var sc smartauth.Scopes
		for _, typ := range types {
			sc = append(sc, smartauth.Scope{Type: typ})
		}
		tok, err := keys.Sign(client, sc, time.Now(), smartauth.TokenLifetime)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	owner, other, ownerPatients := token("owner", "*"), token("other", "*"), token("owner", "Patient")
	call := func(h func(context.Context, json.RawMessage) (any, error), method, path, query, tok string) events.APIGatewayV2HTTPResponse {
		t.Helper()
		return bearerCall(t, h, method, path, query, tok)
	}
	r := call(kickoffFn, http.MethodGet, "/fhir/$export", "_type=Patient,Observation", owner)
	if r.StatusCode != http.StatusAccepted {
		t.Fatalf("kick-off: %d %s", r.StatusCode, r.Body)
	}
	status := "/fhir" + strings.TrimPrefix(header(r, "Content-Location"), publicBase)
	waitfor.Condition(waitLimit, 100*time.Millisecond, func() bool {
		r = call(statusFn, http.MethodGet, status, "", owner)
		return r.StatusCode != http.StatusAccepted
	})
	var m manifest
	if r.StatusCode != http.StatusOK || json.Unmarshal([]byte(r.Body), &m) != nil {
		t.Fatalf("status: %d %s", r.StatusCode, r.Body)
	}
	if !m.RequiresAccessToken {
		t.Error("redirect mode: requiresAccessToken false")
	}
	paths := map[string]string{}
	counts := map[string]int64{}
	for _, o := range m.Output {
		p, ok := strings.CutPrefix(o.URL, publicBase+"/bulkfiles/")
		if !ok || strings.Contains(p, "?") {
			t.Fatalf("output url %q: want %s/bulkfiles/{key}", o.URL, publicBase)
		}
		if _, seen := paths[o.Type]; !seen {
			paths[o.Type] = "/fhir/bulkfiles/" + p
			counts[o.Type] = *o.Count
		}
	}
	if paths["Patient"] == "" || paths["Observation"] == "" {
		t.Fatalf("manifest lacks Patient or Observation: %s", r.Body)
	}

	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"owner", paths["Observation"], owner, http.StatusTemporaryRedirect},
		{"owner, narrowed to the type", paths["Patient"], ownerPatients, http.StatusTemporaryRedirect},
		{"no token", paths["Observation"], "", http.StatusUnauthorized},
		{"another client", paths["Observation"], other, http.StatusNotFound},
		{"scopes without the type", paths["Observation"], ownerPatients, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := call(statusFn, http.MethodGet, tc.path, "", tc.token)
			if r.StatusCode != tc.want {
				t.Fatalf("GET %s = %d %s, want %d", tc.path, r.StatusCode, r.Body, tc.want)
			}
			if tc.want != http.StatusTemporaryRedirect {
				if !strings.Contains(r.Body, `"OperationOutcome"`) {
					t.Errorf("refusal without an OperationOutcome: %s", r.Body)
				}
				return
			}
			loc := header(r, "Location")
			u, err := url.Parse(loc)
			if err != nil || !strings.HasPrefix(loc, cl.env["AWS_ENDPOINT_URL_S3"]+"/"+bucket+"/") {
				t.Fatalf("Location %q is not the export bucket", loc)
			}
			if secs, _ := strconv.Atoi(u.Query().Get("X-Amz-Expires")); secs <= 0 || secs > int(s3store.RedirectLifetime.Seconds()) {
				t.Errorf("redirect link valid for %ds, want minutes", secs)
			}
			// The client follows the redirect without its token.
			resp, err := http.Get(loc)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			typ := "Observation"
			if tc.path == paths["Patient"] {
				typ = "Patient"
			}
			if n := int64(bytes.Count(body, []byte("\n"))); resp.StatusCode != 200 || n != counts[typ] {
				t.Errorf("following the redirect: %d, %d lines, want 200 and %d", resp.StatusCode, n, counts[typ])
			}
		})
	}
	// A HEAD is redirected to a presigned HEAD (a presigned GET would
	// refuse it).
	if r := call(statusFn, http.MethodHead, paths["Patient"], "", owner); r.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("HEAD = %d %s", r.StatusCode, r.Body)
	} else if resp, err := http.Head(header(r, "Location")); err != nil || resp.StatusCode != 200 {
		t.Errorf("following the HEAD redirect: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// The kickoff function does not serve the download route.
	if r := call(kickoffFn, http.MethodGet, paths["Patient"], "", owner); r.StatusCode == http.StatusTemporaryRedirect {
		t.Errorf("the kickoff function answered a download")
	}

	var redirected, refused int
	sc := bufio.NewScanner(&logs)
	for sc.Scan() {
		var a struct{ Msg, Event, Client, Job, File string }
		var o struct{ Outcome int }
		json.Unmarshal(sc.Bytes(), &a)
		json.Unmarshal(sc.Bytes(), &o)
		if a.Msg != "audit" || a.Event != "download" {
			continue
		}
		switch o.Outcome {
		case http.StatusTemporaryRedirect:
			redirected++
			if a.Client != "owner" || a.Job == "" || a.File == "" {
				t.Errorf("download audit line %s", sc.Bytes())
			}
		default:
			refused++
		}
	}
	if redirected < 2 || refused < 3 {
		t.Errorf("audit: %d redirects, %d refusals logged; want ≥ 2, ≥ 3", redirected, refused)
	}
	if strings.Contains(logs.String(), "_type=") {
		t.Errorf("a query string was logged")
	}
}

// TestCompressedFilesOnAWS: the export function stores NDJSON
// gzip-compressed with Content-Encoding: gzip in the object's metadata; a
// presigned GET returns those bytes to every client (S3 does not
// negotiate), and a client sending what SMART's bulk-data-client sends and
// one sending no Accept-Encoding both read the same lines.
func TestCompressedFilesOnAWS(t *testing.T) {
	cl := need(t)
	job := kickoff(t, http.MethodGet, "/fhir/$export", "_type=Patient,Condition", "")
	m := completed(t, job)
	if len(m.Output) == 0 {
		t.Fatal("no output")
	}
	fetch := func(u string, acceptEncoding string) ([]byte, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		if acceptEncoding != "" {
			req.Header.Set("Accept-Encoding", acceptEncoding)
		}
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET = %d %s", resp.StatusCode, body)
		}
		enc := resp.Header.Get("Content-Encoding")
		if enc == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			body, err = io.ReadAll(zr)
			if err != nil {
				t.Fatal(err)
			}
		}
		return body, enc
	}
	var stored, plainBytes int64
	for _, o := range m.Output {
		gz, encGz := fetch(o.URL, "gzip, deflate, br, identity")
		plain, encPlain := fetch(o.URL, "")
		if encGz != "gzip" || encPlain != "gzip" {
			t.Errorf("%s: Content-Encoding %q and %q, want gzip from S3 to both", o.Type, encGz, encPlain)
		}
		if !bytes.Equal(gz, plain) || int64(bytes.Count(plain, []byte("\n"))) != *o.Count || *o.FileSize != int64(len(plain)) {
			t.Errorf("%s: %d and %d bytes, count %d, fileSize %d", o.Type, len(gz), len(plain), *o.Count, *o.FileSize)
		}
		plainBytes += int64(len(plain))
	}
	out, err := cl.s3.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(cl.exportPx + job + "/")})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out.Contents {
		if !strings.HasSuffix(aws.ToString(o.Key), ".ndjson") {
			continue
		}
		head, err := cl.s3.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: o.Key})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(head.ContentEncoding) != "gzip" {
			t.Errorf("%s: Content-Encoding %q", aws.ToString(o.Key), aws.ToString(head.ContentEncoding))
		}
		stored += aws.ToInt64(o.Size)
	}
	if stored == 0 || stored*4 > plainBytes {
		t.Errorf("stored %d bytes for %d bytes of NDJSON", stored, plainBytes)
	}
}
