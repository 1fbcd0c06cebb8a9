// Package apigw is the API Gateway glue of the API functions: it serves an
// http.Handler behind the HTTP API (payload 2.0) and the REST API (proxy
// events), answers crafted events with OperationOutcomes, takes the caller
// from the gateway's authorizer and its request id as the kick-off
// idempotency key, and implements the Lambda authorizers.
package apigw

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-lambda-go/events"
	"github.com/awslabs/aws-lambda-go-api-proxy/core"
	"github.com/awslabs/aws-lambda-go-api-proxy/httpadapter"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// Gateway serves an http.Handler behind either API Gateway: the HTTP API
// (payload format 2.0) and the REST API (Lambda proxy integration, format
// 1.0). The stack chooses one (bulkfhir:apiType); the function is the same.
type Gateway struct {
	v1        *httpadapter.HandlerAdapter
	v2        *httpadapter.HandlerAdapterV2
	h, staged http.Handler
}

// NewGateway adapts h to both payload formats. Behind the REST API the
// stage is part of the public URL (https://id.execute-api…/<stage>/fhir)
// but not of the event's path, so the stage goes into the request's
// context and every URL the handler builds carries it.
//
// Behind the HTTP API large responses go gzip-compressed to clients that
// accept it (compressLarge), which lifts the 6 MB Lambda response cap of a
// complete manifest about fifteenfold. The REST API would pass a base64
// body through as text unless binary media types were configured for
// every request, so there responses stay as written.
func NewGateway(h http.Handler) *Gateway {
	staged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rc, ok := requestContextV1(r); ok && rc.Stage != "" && rc.Stage != "$default" {
			r = r.WithContext(smartauth.WithPathPrefix(r.Context(), "/"+rc.Stage))
		}
		h.ServeHTTP(w, r)
	})
	v2 := compressLarge(h)
	return &Gateway{v1: httpadapter.New(staged), v2: httpadapter.NewV2(v2), h: v2, staged: staged}
}

// Invoke is the Lambda handler: it reads the payload's version and answers
// in the same format.
func (g *Gateway) Invoke(ctx context.Context, raw json.RawMessage) (any, error) {
	var probe struct {
		Version    string `json:"version"`
		HTTPMethod string `json:"httpMethod"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("not an API Gateway event: %w", err)
	}
	switch {
	case probe.Version == "2.0":
		var ev events.APIGatewayV2HTTPRequest
		if err := json.Unmarshal(raw, &ev); err != nil {
			return nil, fmt.Errorf("API Gateway v2 event: %w", err)
		}
		return g.serveV2(ctx, ev)
	case probe.HTTPMethod != "":
		var ev events.APIGatewayProxyRequest
		if err := json.Unmarshal(raw, &ev); err != nil {
			return nil, fmt.Errorf("API Gateway REST event: %w", err)
		}
		return g.serveV1(ctx, ev)
	}
	return nil, errors.New("not an API Gateway event: neither payload format 2.0 nor a REST API proxy event")
}

// serveV2 answers an HTTP API event. Unlike httpadapter's ProxyWithContext,
// an event that is not a valid HTTP request (a path that is not valid
// percent-encoding, a body flagged base64 that is not, a malformed method)
// is answered with a 400 OperationOutcome instead of a function error, and
// a handler that writes nothing gets a 500 OperationOutcome: the function
// never errors on input.
func (g *Gateway) serveV2(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	req, err := g.v2.EventToRequestWithContext(ctx, ev)
	if err != nil {
		st, hd, body := outcome(http.StatusBadRequest, fhir.CodeStructure,
			"the request could not be read: "+describeEventError(ev.IsBase64Encoded, ev.Body))
		return events.APIGatewayV2HTTPResponse{StatusCode: st, Headers: hd, Body: body}, nil
	}
	w := core.NewProxyResponseWriterV2()
	g.h.ServeHTTP(w, req)
	resp, err := w.GetProxyResponse()
	if err != nil {
		st, hd, body := outcome(http.StatusInternalServerError, fhir.CodeException, "internal error: no response")
		return events.APIGatewayV2HTTPResponse{StatusCode: st, Headers: hd, Body: body}, nil
	}
	return resp, nil
}

// serveV1 answers a REST API proxy event, with the same handling of
// crafted events as serveV2.
func (g *Gateway) serveV1(ctx context.Context, ev events.APIGatewayProxyRequest) (events.APIGatewayProxyResponse, error) {
	req, err := g.v1.EventToRequestWithContext(ctx, ev)
	if err != nil {
		st, hd, body := outcome(http.StatusBadRequest, fhir.CodeStructure,
			"the request could not be read: "+describeEventError(ev.IsBase64Encoded, ev.Body))
		return events.APIGatewayProxyResponse{StatusCode: st, Headers: hd, Body: body}, nil
	}
	w := core.NewProxyResponseWriter()
	g.staged.ServeHTTP(w, req)
	resp, err := w.GetProxyResponse()
	if err != nil {
		st, hd, body := outcome(http.StatusInternalServerError, fhir.CodeException, "internal error: no response")
		return events.APIGatewayProxyResponse{StatusCode: st, Headers: hd, Body: body}, nil
	}
	return resp, nil
}

// describeEventError says which part of a crafted event is invalid, without
// echoing it.
func describeEventError(base64Body bool, body string) string {
	if base64Body {
		if _, err := base64.StdEncoding.DecodeString(body); err != nil {
			return "the body is flagged base64 but is not valid base64"
		}
	}
	return "the method or path is not valid (percent-encoding, characters)"
}

func outcome(status int, code, msg string) (int, map[string]string, string) {
	return status, map[string]string{"Content-Type": "application/fhir+json"},
		string(fhir.Outcome(fhir.SeverityError, code, msg).JSON())
}

// Authorizers answers API Gateway's Lambda authorizer events of both APIs:
// the HTTP API's (payload 2.0, simple responses) and the REST API's TOKEN
// authorizer (an IAM policy for the whole API, so the cached answer serves
// every route; a refused token is the 401 "Unauthorized" error API Gateway
// expects).
func Authorizers(keys *smartauth.Keys) func(context.Context, json.RawMessage) (any, error) {
	v2 := Authorizer(keys)
	return func(ctx context.Context, raw json.RawMessage) (any, error) {
		var probe struct {
			Version string `json:"version"`
			Type    string `json:"type"`
		}
		if err := json.Unmarshal(raw, &probe); err != nil {
			return nil, fmt.Errorf("not an authorizer event: %w", err)
		}
		if probe.Version == "2.0" {
			var ev events.APIGatewayV2CustomAuthorizerV2Request
			if err := json.Unmarshal(raw, &ev); err != nil {
				return nil, fmt.Errorf("authorizer v2 event: %w", err)
			}
			return v2(ctx, ev)
		}
		if probe.Type != "TOKEN" {
			return nil, fmt.Errorf("unsupported authorizer event type %q: want a 2.0 event or a REST API TOKEN event", probe.Type)
		}
		var ev events.APIGatewayCustomAuthorizerRequest
		if err := json.Unmarshal(raw, &ev); err != nil {
			return nil, fmt.Errorf("authorizer TOKEN event: %w", err)
		}
		return TokenAuthorizer(keys)(ctx, ev)
	}
}

// errUnauthorized is the exact error text that makes API Gateway answer
// 401 for a TOKEN authorizer.
var errUnauthorized = errors.New("Unauthorized")

// TokenAuthorizer is the REST API's TOKEN authorizer.
func TokenAuthorizer(keys *smartauth.Keys) func(context.Context, events.APIGatewayCustomAuthorizerRequest) (events.APIGatewayCustomAuthorizerResponse, error) {
	return func(_ context.Context, req events.APIGatewayCustomAuthorizerRequest) (events.APIGatewayCustomAuthorizerResponse, error) {
		scheme, tok, ok := strings.Cut(strings.TrimSpace(req.AuthorizationToken), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return events.APIGatewayCustomAuthorizerResponse{}, errUnauthorized
		}
		client, err := keys.Issued(strings.TrimSpace(tok))
		if err != nil {
			return events.APIGatewayCustomAuthorizerResponse{}, errUnauthorized
		}
		return events.APIGatewayCustomAuthorizerResponse{
			PrincipalID: client,
			PolicyDocument: events.APIGatewayCustomAuthorizerPolicy{
				Version: "2012-10-17",
				Statement: []events.IAMPolicyStatement{{
					Action: []string{"execute-api:Invoke"}, Effect: "Allow", Resource: []string{apiWildcard(req.MethodArn)},
				}},
			},
			Context: map[string]any{"client_id": client},
		}, nil
	}
}

// apiWildcard turns a method ARN
// (arn:aws:execute-api:region:account:api/stage/VERB/path) into the ARN of
// every method of that API and stage.
func apiWildcard(methodArn string) string {
	arn, rest, ok := strings.Cut(methodArn, ":execute-api:")
	if !ok {
		return methodArn
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 2 {
		return methodArn
	}
	return arn + ":execute-api:" + parts[0] + "/" + parts[1] + "/*/*"
}

func requestContextV1(r *http.Request) (events.APIGatewayProxyRequestContext, bool) {
	return core.GetAPIGatewayContextFromContext(r.Context())
}
