package apigw

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
)

// TestLargeResponsesCompressedBehindTheHTTPAPI: a large response to a
// client that accepts gzip comes back compressed (base64 in the event,
// decoded by API Gateway) and decompresses to what the handler wrote;
// small responses, clients that do not accept gzip and the REST API get
// the body as written.
func TestLargeResponsesCompressedBehindTheHTTPAPI(t *testing.T) {
	large := `{"output":[` + strings.Repeat(`{"type":"Observation","url":"https://bucket.s3.amazonaws.com/exports/j/u.ndjson?X-Amz-Signature=abc"},`, 2000) + `{}]}`
	small := `{"resourceType":"OperationOutcome"}`
	g := NewGateway(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Expires", "Tue, 01 Dec 2026 20:00:00 GMT")
		w.WriteHeader(http.StatusOK)
		if r.URL.Query().Get("small") != "" {
			io.WriteString(w, small)
			return
		}
		io.WriteString(w, large)
	}))
	for _, tc := range []struct {
		name, acceptEncoding, query string
		rest, gzipped               bool
	}{
		{"gzip accepted", "gzip, deflate, br", "", false, true},
		{"gzip with q", "br;q=1.0, gzip;q=0.5", "", false, true},
		{"gzip refused", "gzip;q=0", "", false, false},
		{"no accept-encoding", "", "", false, false},
		{"small body", "gzip", "small=1", false, false},
		{"rest api", "gzip", "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			headers := map[string]string{"host": "h.example"}
			if tc.acceptEncoding != "" {
				headers["accept-encoding"] = tc.acceptEncoding
			}
			var ev any = events.APIGatewayV2HTTPRequest{Version: "2.0", RawPath: "/fhir/bulkstatus/j", RawQueryString: tc.query, Headers: headers,
				RequestContext: events.APIGatewayV2HTTPRequestContext{DomainName: "h.example", Stage: "$default",
					HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: "GET", Path: "/fhir/bulkstatus/j"}}}
			if tc.rest {
				q := map[string]string{}
				if tc.query != "" {
					q["small"] = "1"
				}
				ev = events.APIGatewayProxyRequest{Path: "/fhir/bulkstatus/j", HTTPMethod: "GET", Headers: headers, QueryStringParameters: q,
					RequestContext: events.APIGatewayProxyRequestContext{DomainName: "h.example", Stage: "$default"}}
			}
			raw, _ := json.Marshal(ev)
			out, err := g.Invoke(context.Background(), raw)
			if err != nil {
				t.Fatal(err)
			}
			var body, encoding string
			var b64 bool
			var status int
			switch r := out.(type) {
			case events.APIGatewayV2HTTPResponse:
				body, b64, status, encoding = r.Body, r.IsBase64Encoded, r.StatusCode, r.Headers["Content-Encoding"]
				if r.Headers["Expires"] == "" || r.Headers["Content-Type"] != "application/json" {
					t.Errorf("headers lost: %v", r.Headers)
				}
			case events.APIGatewayProxyResponse:
				body, b64, status, encoding = r.Body, r.IsBase64Encoded, r.StatusCode, r.Headers["Content-Encoding"]
			}
			if status != http.StatusOK {
				t.Fatalf("status %d", status)
			}
			if (encoding == "gzip") != tc.gzipped || b64 != tc.gzipped {
				t.Fatalf("Content-Encoding %q, base64 %v; want compressed=%v", encoding, b64, tc.gzipped)
			}
			want := large
			if tc.query != "" {
				want = small
			}
			if tc.gzipped {
				z, err := base64.StdEncoding.DecodeString(body)
				if err != nil {
					t.Fatal(err)
				}
				if len(z)*4 > len(want) {
					t.Errorf("compressed %d bytes from %d: want at least 4:1", len(z), len(want))
				}
				zr, err := gzip.NewReader(bytes.NewReader(z))
				if err != nil {
					t.Fatal(err)
				}
				plain, err := io.ReadAll(zr)
				if err != nil {
					t.Fatal(err)
				}
				body = string(plain)
			}
			if body != want {
				t.Errorf("body of %d bytes differs from the %d the handler wrote", len(body), len(want))
			}
		})
	}
}

// TestJSONStringLen: the size check counts a body as the Lambda runtime
// writes it into the response event (encoding/json, HTML escaping off).
func TestJSONStringLen(t *testing.T) {
	for _, s := range []string{
		"", "plain", `{"url":"https://b.s3.amazonaws.com/k?X-Amz-Date=1&X-Amz-Expires=2"}`, "quote \" backslash \\",
		"\n\r\t\b\f\x00\x1f\x7f", "<script>&</script>", "é ü 日本 🙂", "\u2028\u2029", "bad \xff\xfe utf-8 \xe2\x82",
	} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.Encode(s)
		want := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		if got := jsonStringLen([]byte(s)); got != len(want) {
			t.Errorf("jsonStringLen(%q) = %d, want %d (%s)", s, got, len(want), want)
		}
	}
}
