package export_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/typefilter"
)

// filteringSource is the fake source with _typeFilter support checked by
// package typefilter, as the NDJSON sources do.
type filteringSource struct{ exporttest.Source }

func (s *filteringSource) Caps() export.SourceCaps { return export.SourceCaps{TypeFilter: true} }

func (s *filteringSource) CheckTypeFilter(typ, query string) (string, []error) {
	kept, problems := typefilter.Check(typ, query)
	var errs []error
	for _, p := range problems {
		errs = append(errs, p)
	}
	return kept, errs
}

func TestKickoffChecksTypeFilterParameters(t *testing.T) {
	cases := []struct {
		name    string
		filters []string
		lenient bool
		err     []string // strings the rejection must name
		want    []string // filters the job keeps
	}{
		{"supported", []string{"Observation?status=final&date=ge2024"}, false, nil, []string{"Observation?status=final&date=ge2024"}},
		{"unsupported modifier", []string{"Observation?code:in=http://x/vs"}, false, []string{"_typeFilter", "code:in"}, nil},
		{"unknown parameter", []string{"Observation?status=final", "Patient?colour=red"}, false, []string{"colour"}, nil},
		// Dropping a search parameter, or a whole filter, would export more
		// than asked: lenient handling refuses it too (issue 18).
		{"lenient does not drop a parameter", []string{"Observation?status=final&code:in=x"}, true, []string{"_typeFilter", "code:in"}, nil},
		{"lenient does not drop a filter", []string{"Observation?code:in=x", "Patient?gender=male"}, true, []string{"_typeFilter", "code:in"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := &filteringSource{exporttest.Source{Lines: map[string][]string{"Observation": lines("Observation", 1)}}}
			svc := export.NewService(exporttest.NewJobStore(), exporttest.NewFileStore(), &nopRunner{}, src, export.Config{},
				slog.New(slog.NewTextHandler(io.Discard, nil)))
			req := &bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON, TypeFilters: tc.filters, Lenient: tc.lenient}
			job, err := svc.Kickoff(context.Background(), "c", req, "u", "")
			if tc.err != nil {
				var be *bulkdata.Error
				if err == nil || !errors.As(err, &be) || be.Status != 400 {
					t.Fatalf("err = %v, want a 400", err)
				}
				for _, s := range tc.err {
					if !strings.Contains(string(be.Outcome.JSON()), s) {
						t.Errorf("OperationOutcome %s does not name %s", be.Outcome.JSON(), s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(job.Request.TypeFilters, tc.want) {
				t.Errorf("job keeps %q, want %q", job.Request.TypeFilters, tc.want)
			}
			if tc.lenient && len(job.Request.Ignored) == 0 {
				t.Error("lenient handling dropped a parameter without a warning")
			}
		})
	}
}
