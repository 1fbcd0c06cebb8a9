package bulkclient

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzParseManifest: a manifest from any server never panics the client,
// and one it accepts names only absolute http(s) URLs and typed files whose
// local names stay inside the output folder.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"transactionTime":"2026-01-01T00:00:00Z","request":"x","requiresAccessToken":false,"output":[{"type":"Patient","url":"http://h/p","count":2}],"error":[]}`))
	f.Add([]byte(`{"transactionTime":"t","output":[{"type":"../../etc","url":"https://h/x"}],"error":[{"type":"OperationOutcome","url":"http://h/e","count":-1}]}`))
	f.Add([]byte(`{"transactionTime":"t","output":[{"type":"Patient","url":"/relative"}]}`))
	f.Add([]byte(`{"output":[]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		files, err := ManifestFiles(raw)
		if err != nil {
			return
		}
		m, err := parseManifest(raw)
		if err != nil {
			t.Fatalf("ManifestFiles accepted what parseManifest refuses: %v", err)
		}
		for _, list := range [][]Entry{m.Output, m.Error, m.Deleted} {
			for _, e := range list {
				u, err := url.Parse(e.URL)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					t.Fatalf("accepted URL %q", e.URL)
				}
			}
		}
		for _, f := range files {
			if strings.Contains(f.Name, "..") || strings.HasPrefix(f.Name, "/") || strings.Count(f.Name, "/") > 1 {
				t.Fatalf("file name %q leaves the output folder", f.Name)
			}
		}
	})
}
