package lambdaenv

import (
	"context"
	"fmt"
	"net/http"

	"github.com/aws/aws-lambda-go/events"
	"github.com/awslabs/aws-lambda-go-api-proxy/core"
	"github.com/awslabs/aws-lambda-go-api-proxy/httpadapter"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// GatewayHandler adapts an http.Handler to API Gateway (HTTP API, payload
// format 2.0). Unlike httpadapter's ProxyWithContext, an event that is not
// a valid HTTP request (a path that is not valid percent-encoding, a body
// flagged base64 that is not, a malformed method) is answered with a 400
// OperationOutcome instead of a function error, and a handler that writes
// nothing gets a 500 OperationOutcome: the function never errors on input.
func GatewayHandler(h http.Handler) func(context.Context, events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	adapter := httpadapter.NewV2(h)
	return func(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
		req, err := adapter.EventToRequestWithContext(ctx, ev)
		if err != nil {
			return outcomeResponse(http.StatusBadRequest, fhir.CodeStructure,
				fmt.Sprintf("the request could not be read: %s", describeEventError(ev))), nil
		}
		w := core.NewProxyResponseWriterV2()
		h.ServeHTTP(w, req)
		resp, err := w.GetProxyResponse()
		if err != nil {
			return outcomeResponse(http.StatusInternalServerError, fhir.CodeException, "internal error: no response"), nil
		}
		return resp, nil
	}
}

// describeEventError says which part of a crafted event is invalid, without
// echoing it.
func describeEventError(ev events.APIGatewayV2HTTPRequest) string {
	r := core.RequestAccessorV2{}
	if ev.IsBase64Encoded {
		probe := ev
		probe.RawPath, probe.RawQueryString, probe.RequestContext.HTTP.Path, probe.RequestContext.HTTP.Method = "/", "", "/", http.MethodGet
		if _, err := r.EventToRequest(probe); err != nil {
			return "the body is flagged base64 but is not valid base64"
		}
	}
	return "the method or path is not valid (percent-encoding, characters)"
}

func outcomeResponse(status int, code, msg string) events.APIGatewayV2HTTPResponse {
	return events.APIGatewayV2HTTPResponse{
		StatusCode: status,
		Headers:    map[string]string{"Content-Type": "application/fhir+json"},
		Body:       string(fhir.Outcome(fhir.SeverityError, code, msg).JSON()),
	}
}
