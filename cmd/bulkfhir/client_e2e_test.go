package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/bulkclient"
)

func TestClientAgainstEmbeddedServer(t *testing.T) {
	s := startServer(t, dataDir, "--max-file-bytes", "100000")
	src := sourceResources(t, dataDir)
	all := map[string]bool{}
	for k := range src {
		if id, ok := strings.CutPrefix(k, "Patient/"); ok {
			all[id] = true
		}
	}
	var onePatient string
	for id := range all {
		onePatient = id
		break
	}
	tests := []struct {
		name string
		opts bulkclient.Options
		want map[string][]byte
	}{
		{"system GET", bulkclient.Options{}, src},
		{"system POST", bulkclient.Options{Post: true}, src},
		{"patient", bulkclient.Options{Level: "patient"}, expectedCompartment(src, all)},
		{"patient POST with patient", bulkclient.Options{Level: "patient", Patients: []string{onePatient}}, expectedCompartment(src, map[string]bool{onePatient: true})},
		{"group", bulkclient.Options{Level: "group", Group: "care-team-a"}, expectedCompartment(src, groupMembers(t, src, "care-team-a"))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.Server = s.base
			o.OutDir = t.TempDir()
			c, err := bulkclient.New(o, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			sum, err := c.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			sameSet(t, sourceResources(t, o.OutDir), tc.want)
			if sum.Resources != int64(len(tc.want)) {
				t.Errorf("summary counts %d resources, want %d", sum.Resources, len(tc.want))
			}
		})
	}

	// Resume: a removed file is fetched again, the others are kept.
	dir := t.TempDir()
	c, _ := bulkclient.New(bulkclient.Options{Server: s.base, OutDir: dir}, nil, nil)
	if _, err := c.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "Observation.2.ndjson"))
	c, _ = bulkclient.New(bulkclient.Options{Server: s.base, OutDir: dir, Resume: true}, nil, nil)
	sum, err := c.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Skipped != sum.Files-1 {
		t.Errorf("resume kept %d of %d files, want all but one", sum.Skipped, sum.Files)
	}
	sameSet(t, sourceResources(t, dir), src)
}

func TestExportCommand(t *testing.T) {
	s := startServer(t, dataDir)
	out := t.TempDir()
	cmd := exec.Command(binPath, "export", "--server", s.base, "--type", "Patient,Condition", "--out", out, "--parallel", "2")
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bulkfhir export: %v\n%s", err, b)
	}
	if !strings.Contains(string(b), "Patient") || !strings.Contains(string(b), "resources/s") {
		t.Errorf("no summary table:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(out, "manifest.json")); err != nil {
		t.Errorf("manifest.json not written: %v", err)
	}
	// A rejected kick-off is one line on stderr and a non-zero exit.
	cmd = exec.Command(binPath, "export", "--server", s.base, "--type", "NotAType", "--out", t.TempDir())
	b, err = cmd.CombinedOutput()
	if err == nil || strings.Count(strings.TrimSpace(string(b)), "\n") != 0 || !strings.Contains(string(b), "NotAType") {
		t.Errorf("bad kick-off: err %v, output %q", err, b)
	}
}
