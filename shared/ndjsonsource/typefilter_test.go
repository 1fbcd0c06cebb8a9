package ndjsonsource

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/typefilter/typefiltertest"
)

func TestTypeFilterCases(t *testing.T) {
	dir := t.TempDir()
	// One file of mixed types: the index finds each type's lines.
	if err := os.WriteFile(filepath.Join(dir, "mixed.ndjson"), typefiltertest.Resources, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := New(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Caps().TypeFilter {
		t.Fatal("the NDJSON source does not declare _typeFilter")
	}
	typefiltertest.RunSource(t, s)

	// A filter that cannot be evaluated fails the read instead of being
	// ignored (kick-off refuses it first; this is the safety net).
	ctx := context.Background()
	segs, err := s.Plan(ctx, export.Query{Level: bulkdata.LevelSystem}, "Observation")
	if err != nil || len(segs) == 0 {
		t.Fatalf("Plan: %v, %d segments", err, len(segs))
	}
	q := export.Query{Level: bulkdata.LevelSystem}
	if r, err := s.Open(ctx, q, "Observation", segs[0], ""); err != nil {
		t.Fatalf("Open without a filter: %v", err)
	} else {
		r.Close()
	}
	q.TypeFilters = []string{"code:in=http://example.org/vs"}
	if _, err := s.Open(ctx, q, "Observation", segs[0], ""); err == nil || !strings.Contains(err.Error(), "code:in") {
		t.Errorf("Open with code:in: err = %v, want one naming code:in", err)
	}
}

func TestCheckTypeFilterNamesUnsupportedParameters(t *testing.T) {
	s, err := New(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	kept, problems := s.CheckTypeFilter("Observation", "status=final&code:in=http://example.org/vs")
	if kept != "status=final" || len(problems) != 1 || !strings.Contains(problems[0].Error(), "code:in") {
		t.Errorf("got %q, %v; want status=final and one problem naming code:in", kept, problems)
	}
}
