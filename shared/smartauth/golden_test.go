package smartauth

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestDiscoveryGolden pins the wire shape of .well-known/smart-configuration
// (regenerate with go test -run Golden -update, and review the diff).
func TestDiscoveryGolden(t *testing.T) {
	got, err := json.MarshalIndent(Discovery("https://bulk.example/fhir"), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "smart-configuration.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("discovery document changed:\n got %s\nwant %s", got, want)
	}
}
