package api_test

import (
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/dirstore"
)

// TestLinkPrefixIsTheDirStoresLinkPath: the embedded file store builds its
// links under the path the API routes downloads on.
func TestLinkPrefixIsTheDirStoresLinkPath(t *testing.T) {
	if api.LinkPrefix != dirstore.LinkPath {
		t.Fatalf("api.LinkPrefix = %q, dirstore.LinkPath = %q: the embedded links would 404", api.LinkPrefix, dirstore.LinkPath)
	}
}
