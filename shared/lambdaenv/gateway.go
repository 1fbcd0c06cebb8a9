package lambdaenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-lambda-go/events"
	"github.com/awslabs/aws-lambda-go-api-proxy/core"
	"github.com/awslabs/aws-lambda-go-api-proxy/httpadapter"

	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// Gateway serves an http.Handler behind either API Gateway: the HTTP API
// (payload format 2.0) and the REST API (Lambda proxy integration, format
// 1.0). The stack chooses one (bulkfhir:apiType); the function is the same.
type Gateway struct {
	v1 *httpadapter.HandlerAdapter
	v2 *httpadapter.HandlerAdapterV2
}

// NewGateway adapts h to both payload formats. Behind the REST API the
// stage is part of the public URL (https://id.execute-api…/<stage>/fhir)
// but not of the event's path, so the stage goes into the request's
// context and every URL the handler builds carries it.
func NewGateway(h http.Handler) *Gateway {
	staged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rc, ok := requestContextV1(r); ok && rc.Stage != "" && rc.Stage != "$default" {
			r = r.WithContext(smartauth.WithPathPrefix(r.Context(), "/"+rc.Stage))
		}
		h.ServeHTTP(w, r)
	})
	return &Gateway{v1: httpadapter.New(staged), v2: httpadapter.NewV2(h)}
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
		return g.v2.ProxyWithContext(ctx, ev)
	case probe.HTTPMethod != "":
		var ev events.APIGatewayProxyRequest
		if err := json.Unmarshal(raw, &ev); err != nil {
			return nil, fmt.Errorf("API Gateway REST event: %w", err)
		}
		return g.v1.ProxyWithContext(ctx, ev)
	}
	return nil, errors.New("not an API Gateway event: neither payload format 2.0 nor a REST API proxy event")
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
