package main

import (
	"strings"
	"testing"
)

// TestExportEphemeralStorage: the export function, which spills an
// organized patient batch to /tmp, gets more than Lambda's 512 MB by
// default and what bulkfhir:exportTmpMB asks; no other function gets any.
func TestExportEphemeralStorage(t *testing.T) {
	build := fakeBuild(t)
	for _, tc := range []struct {
		ctx  map[string]any
		want string
	}{
		{map[string]any{}, "2048"},
		{map[string]any{"bulkfhir:exportTmpMB": "6144", "bulkfhir:exportMemoryMB": "3008"}, "6144"},
	} {
		p, err := propsFromContext(func(k string) any { return tc.ctx[k] })
		if err != nil {
			t.Fatal(err)
		}
		p.BuildDir, p.ThrottleRateLimit, p.ThrottleBurstLimit = build, 15, 30
		s := synth(t, p, nil)
		found := false
		for id, r := range s.functions() {
			tmp := js(props(r)["EphemeralStorage"])
			if !strings.HasPrefix(id, "Export") {
				if tmp != "null" && tmp != "" {
					t.Errorf("%s: ephemeral storage %s, want Lambda's default", id, tmp)
				}
				continue
			}
			found = true
			if want := `{"Size":` + tc.want + `}`; tmp != want {
				t.Errorf("%v: export ephemeral storage %s, want %s", tc.ctx, tmp, want)
			}
			if tc.ctx["bulkfhir:exportMemoryMB"] != nil && js(props(r)["MemorySize"]) != "3008" {
				t.Errorf("export memory %s, want 3008", js(props(r)["MemorySize"]))
			}
		}
		if !found {
			t.Fatal("no export function in the template")
		}
	}
}
