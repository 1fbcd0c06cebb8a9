package functions_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/go-jose/go-jose/v4"

	"github.com/bulkfhir/bulkfhir/shared/apigw"
	"github.com/bulkfhir/bulkfhir/shared/dynamoauth"
	"github.com/bulkfhir/bulkfhir/shared/lambdaauth"
	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
	"github.com/bulkfhir/bulkfhir/shared/smartclient"
	"github.com/bulkfhir/bulkfhir/shared/waitfor"
)

const tokenSecretARN = "arn:aws:secretsmanager:us-east-1:000000000000:secret:bulkfhir-token-key-AbCdEf"

// secretsManager is a Secrets Manager endpoint holding one secret, as
// strict as the service about the operation and the secret id.
func secretsManager(t *testing.T, value string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		var in struct{ SecretId string }
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("X-Amz-Target") != "secretsmanager.GetSecretValue" || json.Unmarshal(body, &in) != nil {
			w.WriteHeader(400)
			w.Write([]byte(`{"__type":"InvalidRequestException","message":"unsupported"}`))
			return
		}
		if in.SecretId != tokenSecretARN {
			w.WriteHeader(400)
			w.Write([]byte(`{"__type":"ResourceNotFoundException","message":"Secrets Manager can't find the specified secret."}`))
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"ARN": tokenSecretARN, "Name": "bulkfhir-token-key", "SecretString": value, "VersionId": "v1"})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestBulkfhirTokensOnAWS runs the default authorization of the stack on
// the emulators: the token function over a DynamoDB auth table, the key
// from Secrets Manager, the Lambda authorizer, and the API functions
// verifying tokens, scopes and owners.
func TestBulkfhirTokensOnAWS(t *testing.T) {
	cl := need(t)
	ctx := context.Background()
	keys, smCfg := tokenKeys(t, cl)
	if _, err := lambdaauth.TokenKeys(ctx, smCfg, tokenSecretARN+"-other"); err == nil {
		t.Fatal("a secret that does not exist was read")
	}

	// The token function on a fresh auth table with two clients.
	ddb := dynamodb.NewFromConfig(cl.awsCfg, func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true })
	authTable := "auth-" + exportID()
	if err := dynamoauth.CreateTable(ctx, ddb, authTable); err != nil {
		t.Fatal(err)
	}
	store := dynamoauth.New(ddb, authTable)
	signers := map[string]*ecdsa.PrivateKey{}
	for _, id := range []string{"owner", "other"} {
		k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		signers[id] = k
		jwk, _ := smartclient.PublicJWK(k, "")
		set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}})
		if err := store.Put(ctx, &smartauth.Client{ClientID: id, JWKS: set, Scope: "system/*.read"}); err != nil {
			t.Fatal(err)
		}
	}
	var tokenSrv *httptest.Server
	tokenSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lambdaauth.TokenServer(lambdaauth.Config{TokenSecretARN: tokenSecretARN, AuthTable: authTable, PublicBaseURL: tokenSrv.URL + "/fhir"},
			keys, dynamoauth.New(ddb, authTable), slog.New(slog.DiscardHandler)).ServeHTTP(w, r)
	}))
	t.Cleanup(tokenSrv.Close)
	login := func(id string) string {
		t.Helper()
		ts := &smartclient.TokenSource{ClientID: id, FHIRBase: tokenSrv.URL + "/fhir", Key: signers[id]}
		tok, err := ts.Token(ctx)
		if err != nil {
			t.Fatalf("login %s: %v", id, err)
		}
		return tok
	}
	owner, other := login("owner"), login("other")
	expired, _ := keys.Sign("owner", smartauth.Scopes{{Type: "*"}}, time.Now().Add(-time.Hour), smartauth.TokenLifetime)
	forgedKeys, _ := smartauth.NewHMACKeys([]byte(strings.Repeat("x", 64)))
	forged, _ := forgedKeys.Sign("owner", smartauth.Scopes{{Type: "*"}}, time.Now(), smartauth.TokenLifetime)

	// The Lambda authorizer turns away what bulkfhir did not sign.
	authorize := apigw.Authorizer(keys)
	for _, tc := range []struct {
		header string
		want   bool
	}{{"Bearer " + owner, true}, {"Bearer " + expired, true}, {"Bearer " + forged, false}, {"Basic b3duZXI6eA==", false}, {"", false}} {
		resp, err := authorize(ctx, events.APIGatewayV2CustomAuthorizerV2Request{IdentitySource: []string{tc.header}})
		if err != nil || resp.IsAuthorized != tc.want {
			t.Errorf("authorizer(%.20q) = %v %v, want %v", tc.header, resp.IsAuthorized, err, tc.want)
		}
		// The REST API's TOKEN authorizer decides the same; its policy
		// covers the whole API so the cached answer serves every route.
		raw, _ := json.Marshal(events.APIGatewayCustomAuthorizerRequest{Type: "TOKEN", AuthorizationToken: tc.header,
			MethodArn: "arn:aws:execute-api:us-east-1:123456789012:bulkfhirapi/prod/GET/fhir/bulkstatus/x"})
		out, err := apigw.Authorizers(keys)(ctx, raw)
		policy, _ := out.(events.APIGatewayCustomAuthorizerResponse)
		switch {
		case tc.want && (err != nil || policy.PrincipalID != "owner" || policy.PolicyDocument.Statement[0].Effect != "Allow" ||
			policy.PolicyDocument.Statement[0].Resource[0] != "arn:aws:execute-api:us-east-1:123456789012:bulkfhirapi/prod/*/*"):
			t.Errorf("TOKEN authorizer(%.20q) = %+v %v, want an Allow for the API", tc.header, out, err)
		case !tc.want && (err == nil || err.Error() != "Unauthorized"):
			t.Errorf("TOKEN authorizer(%.20q) = %+v %v, want the Unauthorized error", tc.header, out, err)
		}
	}

	// The API functions as the stack configures them by default.
	api := tokenFunction(t, cl, lambdaenv.RoleAPI, keys, slog.New(slog.DiscardHandler), nil)
	call := func(method, path, query, token string) events.APIGatewayV2HTTPResponse {
		t.Helper()
		return bearerCall(t, api, method, path, query, token)
	}
	for name, token := range map[string]string{"none": "", "expired": expired, "forged": forged} {
		r := call(http.MethodGet, "/fhir/$export", "_type=Patient", token)
		if r.StatusCode != 401 || !strings.HasPrefix(header(r, "WWW-Authenticate"), "Bearer") || !strings.Contains(r.Body, "OperationOutcome") {
			t.Errorf("kick-off with %s token: %d %v %s", name, r.StatusCode, r.Headers, r.Body)
		}
	}
	r := call(http.MethodGet, "/fhir/$export", "_type=Patient", owner)
	if r.StatusCode != http.StatusAccepted {
		t.Fatalf("kick-off: %d %s", r.StatusCode, r.Body)
	}
	status := "/fhir" + strings.TrimPrefix(header(r, "Content-Location"), publicBase)
	waitfor.Condition(waitLimit, 100*time.Millisecond, func() bool {
		r = call(http.MethodGet, status, "", owner)
		return r.StatusCode != http.StatusAccepted
	})
	if r.StatusCode != http.StatusOK || !strings.Contains(r.Body, `"type":"Patient"`) {
		t.Fatalf("owner's status: %d %s", r.StatusCode, r.Body)
	}
	// The same status through the REST API's proxy event (stage "prod"):
	// the owner's token reads it, and the links point at the stage.
	rawREST, _ := json.Marshal(events.APIGatewayProxyRequest{
		Resource: "/fhir/bulkstatus/{job}", Path: status, HTTPMethod: http.MethodGet,
		Headers:        map[string]string{"Authorization": "Bearer " + owner, "Host": "bulkfhirapi.execute-api.us-east-1.amazonaws.com", "X-Forwarded-Proto": "https"},
		RequestContext: events.APIGatewayProxyRequestContext{Stage: "prod", RequestID: exportID(), DomainName: "bulkfhirapi.execute-api.us-east-1.amazonaws.com"},
	})
	if out, err := api(ctx, rawREST); err != nil {
		t.Errorf("status via the REST API: %v", err)
	} else if rr, ok := out.(events.APIGatewayProxyResponse); !ok || rr.StatusCode != http.StatusOK || !strings.Contains(rr.Body, `"type":"Patient"`) {
		t.Errorf("status via the REST API: %T %+v", out, out)
	}
	if r := call(http.MethodGet, status, "", other); r.StatusCode != http.StatusNotFound {
		t.Errorf("another client's status: %d, want 404", r.StatusCode)
	}
	if r := call(http.MethodDelete, status, "", other); r.StatusCode != http.StatusNotFound {
		t.Errorf("another client's cancel: %d, want 404", r.StatusCode)
	}
	if r := call(http.MethodGet, status, "", expired); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("status with an expired token: %d, want 401", r.StatusCode)
	}
}
