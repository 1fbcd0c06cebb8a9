package bulkclient

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"testing"
)

// TestSTU3KickoffParameters: organizeOutputBy and allowPartialManifests go
// in the query of a GET kick-off and, typed as the OperationDefinition says
// (string, boolean), in the Parameters body of a POST.
func TestSTU3KickoffParameters(t *testing.T) {
	var query url.Values
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.Query()
		body, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Location", "/status/1")
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name      string
		opts      Options
		wantQuery url.Values
		wantBody  string
	}{
		{"GET", Options{OrganizeOutputBy: "Patient", PartialManifests: true},
			url.Values{"organizeOutputBy": {"Patient"}, "allowPartialManifests": {"true"}}, ""},
		{"GET without them", Options{Types: []string{"Patient"}}, url.Values{"_type": {"Patient"}}, ""},
		{"POST", Options{Post: true, OrganizeOutputBy: "Patient", PartialManifests: true}, url.Values{},
			`{"resourceType":"Parameters","parameter":[{"name":"allowPartialManifests","valueBoolean":true},{"name":"organizeOutputBy","valueString":"Patient"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Server = srv.URL
			tc.opts.OutDir = t.TempDir()
			c, err := New(tc.opts, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.kickoff(context.Background()); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(query, tc.wantQuery) {
				t.Errorf("query = %v, want %v", query, tc.wantQuery)
			}
			if tc.wantBody == "" {
				if len(body) > 0 {
					t.Errorf("a GET kick-off sent a body: %s", body)
				}
				return
			}
			var got, want any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			json.Unmarshal([]byte(tc.wantBody), &want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parameters body = %s, want %s", body, tc.wantBody)
			}
		})
	}
	// The organization changes the files, so it is part of the recorded
	// request: --resume with another value is refused.
	if a, b := requestOf(Options{OrganizeOutputBy: "Patient"}), requestOf(Options{}); a.String() == b.String() {
		t.Errorf("organizeOutputBy is not recorded in the request: %s", a)
	}
}
