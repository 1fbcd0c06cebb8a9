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
		types   []string // the job's _type afterwards (nil: every type)
	}{
		{"supported", []string{"Observation?status=final&date=ge2024"}, false, nil, []string{"Observation?status=final&date=ge2024"}, nil},
		{"unsupported modifier", []string{"Observation?code:in=http://x/vs"}, false, []string{"_typeFilter", "code:in"}, nil, nil},
		{"unknown parameter", []string{"Observation?status=final", "Patient?colour=red"}, false, []string{"colour"}, nil, nil},
		// Lenient handling never widens (issue 18): dropping a search
		// parameter would select more, so the whole filter goes, and a type
		// left without any of its filters is not exported at all.
		{"lenient drops the whole filter and its type", []string{"Observation?status=final&code:in=x"}, true, nil, nil, []string{"Patient"}},
		{"lenient drops one filter of a type's two", []string{"Observation?code:in=x", "Observation?status=final", "Patient?gender=male"}, true, nil,
			[]string{"Observation?status=final", "Patient?gender=male"}, nil},
		{"lenient with no type left", []string{"Observation?code:in=x", "Patient?colour=red"}, true, []string{"_typeFilter", "no type is left"}, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := &filteringSource{exporttest.Source{Lines: map[string][]string{"Observation": lines("Observation", 1), "Patient": lines("Patient", 1)}}}
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
			if !slices.Equal(job.Request.Types, tc.types) {
				t.Errorf("job exports types %q, want %q", job.Request.Types, tc.types)
			}
			if tc.lenient && len(job.Request.Ignored) == 0 {
				t.Error("lenient handling dropped a parameter without a warning")
			}
		})
	}
}
