package apigw

import (
	"context"
	"net/http"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

func TestGatewayFormats(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Base", smartauth.RequestBase(r, "/fhir"))
		w.WriteHeader(http.StatusTeapot)
	})
	g := NewGateway(echo)
	for _, tc := range []struct {
		name, event, wantBase string
		v1                    bool
	}{
		{"http api", `{"version":"2.0","rawPath":"/fhir/metadata","headers":{"host":"h.example","x-forwarded-proto":"https"},
			"requestContext":{"domainName":"h.example","stage":"$default","http":{"method":"GET","path":"/fhir/metadata"}}}`, "https://h.example/fhir", false},
		{"rest api stage", `{"resource":"/fhir/{proxy+}","path":"/fhir/metadata","httpMethod":"GET",
			"headers":{"Host":"h.example","X-Forwarded-Proto":"https"},"requestContext":{"domainName":"h.example","stage":"prod"}}`, "https://h.example/prod/fhir", true},
		{"rest api client cannot add a prefix", `{"path":"/fhir/metadata","httpMethod":"GET",
			"headers":{"Host":"h.example","X-Forwarded-Prefix":"/evil"},"requestContext":{"domainName":"h.example","stage":"$default"}}`, "http://h.example/fhir", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := g.Invoke(context.Background(), []byte(tc.event))
			if err != nil {
				t.Fatal(err)
			}
			var status int
			var base string
			switch r := out.(type) {
			case events.APIGatewayV2HTTPResponse:
				if tc.v1 {
					t.Fatal("REST event answered in format 2.0")
				}
				status, base = r.StatusCode, r.Headers["X-Base"]
			case events.APIGatewayProxyResponse:
				if !tc.v1 {
					t.Fatal("2.0 event answered in the REST format")
				}
				status, base = r.StatusCode, r.MultiValueHeaders["X-Base"][0]
			default:
				t.Fatalf("answered %T", out)
			}
			if status != http.StatusTeapot || base != tc.wantBase {
				t.Errorf("got %d %q, want 418 %q", status, base, tc.wantBase)
			}
		})
	}
	for _, bad := range []string{`{}`, `[]`, `{"version":"1.0"}`} {
		if _, err := g.Invoke(context.Background(), []byte(bad)); err == nil {
			t.Errorf("%s: accepted, want an error", bad)
		}
	}
}

func TestAPIWildcard(t *testing.T) {
	for in, want := range map[string]string{
		"arn:aws:execute-api:us-east-1:123:abc/prod/GET/fhir/bulkstatus/x": "arn:aws:execute-api:us-east-1:123:abc/prod/*/*",
		"arn:aws:execute-api:us-east-1:123:abc/prod/POST/":                 "arn:aws:execute-api:us-east-1:123:abc/prod/*/*",
		"not-an-arn": "not-an-arn",
	} {
		if got := apiWildcard(in); got != want {
			t.Errorf("apiWildcard(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAuthorizersRefuse(t *testing.T) {
	keys, err := smartauth.NewHMACKeys([]byte("0123456789abcdef0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	a := Authorizers(keys)
	for name, ev := range map[string]string{
		"token no bearer": `{"type":"TOKEN","authorizationToken":"Basic x","methodArn":"arn:aws:execute-api:r:a:api/prod/GET/x"}`,
		"token forged":    `{"type":"TOKEN","authorizationToken":"Bearer a.b.c","methodArn":"arn:aws:execute-api:r:a:api/prod/GET/x"}`,
		"request type":    `{"type":"REQUEST","methodArn":"arn:aws:execute-api:r:a:api/prod/GET/x"}`,
	} {
		if out, err := a(context.Background(), []byte(ev)); err == nil {
			t.Errorf("%s: %+v, want a refusal", name, out)
		}
	}
}
