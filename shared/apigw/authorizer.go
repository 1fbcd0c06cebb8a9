package apigw

import (
	"context"
	"strings"

	"github.com/aws/aws-lambda-go/events"

	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// Authorizer is API Gateway's Lambda authorizer (payload 2.0, simple
// responses): it lets through requests whose bearer token bulkfhir signed
// and turns the rest away at the gateway. Expiry, scopes and job owners
// are the API's checks, on every request (api.Tokens), so a cached answer
// never outlives a token.
func Authorizer(keys *smartauth.Keys) func(context.Context, events.APIGatewayV2CustomAuthorizerV2Request) (events.APIGatewayV2CustomAuthorizerSimpleResponse, error) {
	return func(_ context.Context, req events.APIGatewayV2CustomAuthorizerV2Request) (events.APIGatewayV2CustomAuthorizerSimpleResponse, error) {
		h := ""
		if len(req.IdentitySource) > 0 {
			h = req.IdentitySource[0]
		}
		scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return events.APIGatewayV2CustomAuthorizerSimpleResponse{IsAuthorized: false}, nil
		}
		client, err := keys.Issued(strings.TrimSpace(tok))
		if err != nil {
			return events.APIGatewayV2CustomAuthorizerSimpleResponse{IsAuthorized: false}, nil
		}
		return events.APIGatewayV2CustomAuthorizerSimpleResponse{IsAuthorized: true, Context: map[string]any{"client_id": client}}, nil
	}
}
