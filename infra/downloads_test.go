package main

import (
	"strings"
	"testing"
)

// TestDownloadSigner: the status function signs links with the
// download-signer role: trusted by the status role only, sessions of 1 h,
// read-only on the export prefix; the function knows the role.
func TestDownloadSigner(t *testing.T) {
	s := base(t)
	id := s.logicalID(t, "AWS::IAM::Role", "DownloadSignerRole")
	role := props(s.resources[id])
	if role["MaxSessionDuration"] != 3600.0 {
		t.Errorf("MaxSessionDuration = %v, want 3600 (1 h: the role-chaining limit)", role["MaxSessionDuration"])
	}
	trust := js(role["AssumeRolePolicyDocument"])
	statusRole := s.logicalID(t, "AWS::IAM::Role", "StatusRole")
	if !strings.Contains(trust, statusRole) || strings.Contains(trust, "lambda.amazonaws.com") || strings.Contains(trust, "KickoffRole") {
		t.Errorf("trust policy %s: want the status role only", trust)
	}
	for _, pol := range s.ofType("AWS::IAM::Policy") {
		p := props(pol)
		doc := js(p["PolicyDocument"])
		switch {
		case strings.Contains(js(p["Roles"]), id):
			if !strings.Contains(doc, `"s3:GetObject"`) || !strings.Contains(doc, `/exports/*.ndjson"`) || strings.Contains(doc, `/exports/*"`) {
				t.Errorf("signer policy %s: want GetObject on the exported files (exports/*.ndjson) only", doc)
			}
		case strings.Contains(doc, "sts:AssumeRole") && !strings.Contains(js(p["Roles"]), statusRole):
			t.Errorf("a role other than the status role may assume roles: %s", js(p["Roles"]))
		}
	}
	for fid, fn := range s.functions() {
		env := js(props(fn)["Environment"])
		has := strings.Contains(env, "BULKFHIR_LINK_SIGNER_ROLE_ARN") && strings.Contains(env, id)
		if strings.HasPrefix(fid, "Status") != has {
			t.Errorf("%s: signer role in the environment = %v", fid, has)
		}
		if strings.Contains(env, "BULKFHIR_DOWNLOADS") {
			t.Errorf("%s: the default stack sets a download mode", fid)
		}
	}
}

// TestRedirectDownloads: the download route, guarded like the status
// route, is on the status function on both API types and in both download
// modes (in presigned mode for manifests too large with presigned links);
// bulkfhir:downloads=redirect sets the mode of the API functions.
func TestRedirectDownloads(t *testing.T) {
	for _, tc := range []struct{ apiType, downloads string }{
		{apiHTTP, downloadsRedirect}, {apiREST, downloadsRedirect}, {apiHTTP, ""}, {apiREST, ""},
	} {
		apiType, mode := tc.apiType, tc.downloads
		t.Run(apiType+" "+mode, func(t *testing.T) {
			s := synth(t, StackProps{BuildDir: fakeBuild(t), Downloads: mode, ApiType: apiType}, nil)
			if len(s.errors) > 0 {
				t.Errorf("cdk-nag: %v", s.errors)
			}
			routes := 0
			for _, r := range s.ofType("AWS::ApiGatewayV2::Route") {
				p := props(r)
				if key := p["RouteKey"].(string); strings.Contains(key, "bulkfiles") {
					routes++
					if !strings.Contains(js(p["Target"]), "DownloadIntegration") || p["AuthorizationType"] != "CUSTOM" {
						t.Errorf("route %s: target %s, authorization %v", key, js(p["Target"]), p["AuthorizationType"])
					}
				}
			}
			for _, m := range s.ofType("AWS::ApiGateway::Method") {
				p := props(m)
				if strings.Contains(js(p["ResourceId"]), "bulkfiles") {
					routes++
					if p["AuthorizationType"] != "CUSTOM" || !strings.Contains(js(p["Integration"]), "Status") {
						t.Errorf("REST method %v: authorization %v, integration %s", p["HttpMethod"], p["AuthorizationType"], js(p["Integration"]))
					}
				}
			}
			if routes != 2 {
				t.Errorf("%d download routes, want GET and HEAD", routes)
			}
			for fid, fn := range s.functions() {
				env := js(props(fn)["Environment"])
				want := mode == downloadsRedirect && (strings.HasPrefix(fid, "Status") || strings.HasPrefix(fid, "Kickoff"))
				if got := strings.Contains(env, `"BULKFHIR_DOWNLOADS":"redirect"`); got != want {
					t.Errorf("%s: BULKFHIR_DOWNLOADS=redirect = %v, want %v", fid, got, want)
				}
			}
		})
	}
	if _, err := propsFromContext(func(k string) any {
		if k == "bulkfhir:downloads" {
			return "streamed"
		}
		return nil
	}); err == nil {
		t.Error("bulkfhir:downloads=streamed accepted")
	}
}
