package bulkclient_test

import (
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/bulkclient"
)

// An output item without a type is valid only in a manifest organized by a
// resource type (M-12); its files are named for the organizing type.
func TestOrganizedManifestFiles(t *testing.T) {
	const organized = `{"transactionTime":"2026-01-01T00:00:00Z","request":"x","requiresAccessToken":false,"outputOrganizedBy":"Patient",
		"output":[{"url":"https://f.test/1"},{"url":"https://f.test/2","continuesInFile":"https://f.test/3"},{"url":"https://f.test/3"}],"error":[]}`
	files, err := bulkclient.ManifestFiles([]byte(organized))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
	}
	if got := strings.Join(names, ","); got != "Patient-blocks.1.ndjson,Patient-blocks.2.ndjson,Patient-blocks.3.ndjson" {
		t.Errorf("names = %s", got)
	}
	unorganized := strings.Replace(organized, `"outputOrganizedBy":"Patient",`, "", 1)
	if _, err := bulkclient.ManifestFiles([]byte(unorganized)); err == nil || !strings.Contains(err.Error(), "no type") {
		t.Errorf("an untyped output item without outputOrganizedBy = %v, want refused", err)
	}
}
