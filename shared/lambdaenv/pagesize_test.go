package lambdaenv

import (
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/settings"
)

func TestManifestPageSize(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  int
		err   string
	}{
		{"", export.DefaultManifestPageSize, ""},
		{"250", 250, ""},
		{"0", 0, settings.EnvManifestPageSize},
		{"many", 0, settings.EnvManifestPageSize},
		{"3000", 3000, ""},
		{"3001", 0, "must fit in one 6 MB Lambda response"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			env := map[string]string{settings.EnvTable: "t", settings.EnvBucket: "b", settings.EnvSourceDir: "/d", settings.EnvManifestPageSize: tc.value}
			c, err := Load(func(k string) string { return env[k] }, RoleTask)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Export().ManifestPageSize; got != tc.want {
				t.Errorf("ManifestPageSize = %d, want %d", got, tc.want)
			}
		})
	}
}
