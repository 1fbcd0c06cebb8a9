package boltauth

import (
	"path/filepath"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/smartauthtest"
)

func TestContract(t *testing.T) {
	smartauthtest.StoreContract(t, func(t *testing.T) smartauthtest.Store {
		return New(filepath.Join(t.TempDir(), "auth.db"))
	})
}
