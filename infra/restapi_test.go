package main

import (
	"sort"
	"strings"
	"testing"
)

// TestAPITypesAndArchitectures synthesizes every API type with every
// architecture: each passes cdk-nag, runs the functions on the asked
// architecture and serves the same routes with the same protections.
func TestAPITypesAndArchitectures(t *testing.T) {
	build := fakeBuild(t)
	for _, tc := range []struct{ api, arch string }{
		{apiHTTP, archARM64}, {apiHTTP, archX8664}, {apiREST, archARM64}, {apiREST, archX8664},
	} {
		t.Run(tc.api+"-"+tc.arch, func(t *testing.T) {
			s := synth(t, StackProps{BuildDir: build, ApiType: tc.api, Architecture: tc.arch, ThrottleRateLimit: 15, ThrottleBurstLimit: 30}, nil)
			if len(s.errors) > 0 {
				t.Errorf("cdk-nag errors:\n%s", strings.Join(s.errors, "\n"))
			}
			fns := s.functions()
			if want := len(functions) + len(authFunctions) + len(otherFunctions); len(fns) != want {
				t.Errorf("%d functions, want %d", len(fns), want)
			}
			for id, r := range fns {
				if got := js(props(r)["Architectures"]); got != `["`+tc.arch+`"]` {
					t.Errorf("%s: architectures %s, want %s", id, got, tc.arch)
				}
			}
			if s.outputs["FhirBaseUrl"] == nil || !strings.Contains(js(s.outputs["FhirBaseUrl"]), "/fhir") {
				t.Errorf("FhirBaseUrl = %s", js(s.outputs["FhirBaseUrl"]))
			}
			v1, v2 := len(s.ofType("AWS::ApiGateway::RestApi")), len(s.ofType("AWS::ApiGatewayV2::Api"))
			if tc.api == apiREST && (v1 != 1 || v2 != 0) || tc.api == apiHTTP && (v1 != 0 || v2 != 1) {
				t.Fatalf("apiType %s: %d REST APIs, %d HTTP APIs", tc.api, v1, v2)
			}
			if tc.api == apiREST {
				checkRestAPI(t, s)
				if !strings.Contains(js(s.outputs["FhirBaseUrl"]), "/"+restStage) {
					t.Errorf("FhirBaseUrl %s lacks the stage", js(s.outputs["FhirBaseUrl"]))
				}
			}
		})
	}
}

// checkRestAPI: the REST API's methods, their functions and authorization,
// the cached TOKEN authorizer, throttling and the access log.
func checkRestAPI(t *testing.T, s synthesized) {
	t.Helper()
	paths := map[string]string{} // resource logical id -> path
	var resolve func(id string) string
	resolve = func(id string) string {
		if p, ok := paths[id]; ok {
			return p
		}
		r := props(s.resources[id])
		parent := js(r["ParentId"])
		prefix := ""
		if strings.Contains(parent, "RootResourceId") {
			prefix = ""
		} else {
			var pid string
			if ref, ok := r["ParentId"].(map[string]any); ok {
				pid, _ = ref["Ref"].(string)
			}
			prefix = resolve(pid)
		}
		paths[id] = prefix + "/" + r["PathPart"].(string)
		return paths[id]
	}
	authorizer := s.logicalID(t, "AWS::ApiGateway::Authorizer", "BulkfhirTokensRest")
	a := props(s.resources[authorizer])
	if a["Type"] != "TOKEN" || a["AuthorizerResultTtlInSeconds"] != 300.0 || a["IdentitySource"] != "method.request.header.Authorization" ||
		!strings.Contains(js(a["AuthorizerUri"]), "Authorizer") {
		t.Errorf("authorizer = %s", js(a))
	}
	var got []string
	for _, m := range s.ofType("AWS::ApiGateway::Method") {
		p := props(m)
		ref, _ := p["ResourceId"].(map[string]any)
		rid, _ := ref["Ref"].(string)
		path := resolve(rid)
		key := p["HttpMethod"].(string) + " " + path
		got = append(got, key)
		uri := js(p["Integration"].(map[string]any)["Uri"])
		want := "Kickoff"
		switch {
		case strings.Contains(path, "bulkstatus"), strings.Contains(path, "bulkfiles"):
			want = "Status"
		case strings.Contains(path, "/auth/token") || strings.Contains(path, "smart-configuration"):
			want = "Token"
		}
		if !strings.Contains(uri, want) || p["Integration"].(map[string]any)["Type"] != "AWS_PROXY" {
			t.Errorf("%s integrates %s, want a proxy to %s", key, uri, want)
		}
		public := path == "/fhir/metadata" || path == "/fhir/auth/token" || path == "/fhir/.well-known/smart-configuration"
		if public != (p["AuthorizationType"] == "NONE") || !public && !strings.Contains(js(p["AuthorizerId"]), authorizer) {
			t.Errorf("%s: authorization %v %v (public %v)", key, p["AuthorizationType"], p["AuthorizerId"], public)
		}
	}
	sort.Strings(got)
	want := "DELETE /fhir/bulkstatus/{job},GET /fhir/.well-known/smart-configuration,GET /fhir/bulkfiles/{proxy+},GET /fhir/bulkstatus/{job},GET /fhir/metadata,GET /fhir/{proxy+},GET /fhir/{proxy+}," +
		"HEAD /fhir/bulkfiles/{proxy+},POST /fhir/auth/token,POST /fhir/{proxy+}"
	want = strings.Replace(want, "GET /fhir/{proxy+},GET /fhir/{proxy+},", "GET /fhir/{proxy+},", 1)
	if strings.Join(got, ",") != want {
		t.Errorf("methods = %v, want %s", got, want)
	}
	for _, st := range s.ofType("AWS::ApiGateway::Stage") {
		p := props(st)
		ms := js(p["MethodSettings"])
		if p["StageName"] != restStage || !strings.Contains(ms, `"ThrottlingRateLimit":15`) || !strings.Contains(ms, `"ThrottlingBurstLimit":30`) ||
			!strings.Contains(ms, `"DataTraceEnabled":false`) {
			t.Errorf("stage %v: method settings %s", p["StageName"], ms)
		}
		if p["AccessLogSetting"] == nil || !strings.Contains(js(p["AccessLogSetting"]), "ApiAccessLogs") {
			t.Errorf("no access log on the stage: %s", js(p["AccessLogSetting"]))
		}
	}
}

func TestPropsCheck(t *testing.T) {
	for name, tc := range map[string]struct {
		ctx  map[string]any
		fail string
	}{
		"defaults":         {map[string]any{}, ""},
		"rest x86":         {map[string]any{"bulkfhir:apiType": "rest", "bulkfhir:architecture": "x86_64"}, ""},
		"bad api type":     {map[string]any{"bulkfhir:apiType": "websocket"}, "apiType"},
		"bad arch":         {map[string]any{"bulkfhir:architecture": "amd64"}, "architecture"},
		"rest with jwt":    {map[string]any{"bulkfhir:apiType": "rest", "bulkfhir:jwtIssuer": "https://i.example"}, "apiType=http"},
		"export tmp":       {map[string]any{"bulkfhir:exportTmpMB": "4096", "bulkfhir:exportMemoryMB": "3008"}, ""},
		"tmp too small":    {map[string]any{"bulkfhir:exportTmpMB": "256"}, "exportTmpMB"},
		"tmp too large":    {map[string]any{"bulkfhir:exportTmpMB": "20480"}, "exportTmpMB"},
		"tmp not a number": {map[string]any{"bulkfhir:exportTmpMB": "2G"}, "exportTmpMB"},
		"memory too large": {map[string]any{"bulkfhir:exportMemoryMB": "20000"}, "exportMemoryMB"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := propsFromContext(func(k string) any { return tc.ctx[k] })
			if (err != nil) != (tc.fail != "") || err != nil && !strings.Contains(err.Error(), tc.fail) {
				t.Errorf("err = %v, want one naming %q", err, tc.fail)
			}
		})
	}
}

// TestRestGatewayResponsesAreOperationOutcomes: API Gateway's own refusals
// on the REST API (a missing or refused token above all) carry an
// OperationOutcome with a FHIR Content-Type, and a 401 says how to
// authenticate.
func TestRestGatewayResponsesAreOperationOutcomes(t *testing.T) {
	s := synth(t, StackProps{BuildDir: fakeBuild(t), ApiType: apiREST, ThrottleRateLimit: 15, ThrottleBurstLimit: 30}, nil)
	got := map[string]map[string]any{}
	for _, r := range s.ofType("AWS::ApiGateway::GatewayResponse") {
		p := props(r)
		got[js(p["ResponseType"])] = p
	}
	for _, tc := range []struct{ typ, status, code string }{
		{"UNAUTHORIZED", "401", "login"},
		{"ACCESS_DENIED", "403", "forbidden"},
		{"THROTTLED", "429", "throttled"},
		{"DEFAULT_4XX", "", "invalid"},
		{"DEFAULT_5XX", "", "transient"},
	} {
		p, ok := got[`"`+tc.typ+`"`]
		if !ok {
			t.Errorf("no gateway response for %s", tc.typ)
			continue
		}
		if tc.status != "" && js(p["StatusCode"]) != `"`+tc.status+`"` {
			t.Errorf("%s: status %s, want %s", tc.typ, js(p["StatusCode"]), tc.status)
		}
		headers := js(p["ResponseParameters"])
		if !strings.Contains(headers, `"gatewayresponse.header.Content-Type":"'application/fhir+json'"`) {
			t.Errorf("%s: headers %s lack the FHIR Content-Type", tc.typ, headers)
		}
		if tc.status == "401" && !strings.Contains(headers, "WWW-Authenticate") {
			t.Errorf("%s: no WWW-Authenticate in %s", tc.typ, headers)
		}
		body := js(p["ResponseTemplates"])
		if !strings.Contains(body, `OperationOutcome`) || !strings.Contains(body, `\"code\":\"`+tc.code+`\"`) {
			t.Errorf("%s: template %s is not an OperationOutcome with code %s", tc.typ, body, tc.code)
		}
	}
	// The HTTP API has no gateway responses to shape.
	h := synth(t, StackProps{BuildDir: fakeBuild(t), ApiType: apiHTTP, ThrottleRateLimit: 15, ThrottleBurstLimit: 30}, nil)
	if n := len(h.ofType("AWS::ApiGateway::GatewayResponse")); n != 0 {
		t.Errorf("HTTP API stack has %d REST gateway responses", n)
	}
}
