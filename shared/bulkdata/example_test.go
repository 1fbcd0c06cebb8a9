package bulkdata_test

import (
	"fmt"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
)

// Parse turns a kick-off request into a validated Request.
func ExampleParse() {
	req, err := bulkdata.Parse(bulkdata.Kickoff{
		Method:   "GET",
		Level:    bulkdata.LevelGroup,
		GroupID:  "diabetes",
		RawQuery: "_type=Patient,Observation&_since=2026-01-01T00:00:00Z&_typeFilter=Observation%3Fcode%3D4548-4",
		Now:      time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
	})
	if err != nil {
		fmt.Println(err.Status, err)
		return
	}
	fmt.Println(req.Level, req.GroupID, req.OutputFormat)
	fmt.Println(req.Types, req.Since.Format(time.RFC3339))
	fmt.Println(req.TypeFilters)
	// Output:
	// group diabetes application/fhir+ndjson
	// [Patient Observation] 2026-01-01T00:00:00Z
	// [Observation?code=4548-4]
}

// A kick-off Parse cannot serve exactly is a 400 with an OperationOutcome,
// never a wider export.
func ExampleParse_rejected() {
	_, err := bulkdata.Parse(bulkdata.Kickoff{
		Method:   "GET",
		Level:    bulkdata.LevelSystem,
		RawQuery: "_type=Patient&_outputFormat=text/csv",
		Now:      time.Now(),
	})
	fmt.Println(err.Status, err.Outcome.Issue[0].Code)
	fmt.Println(err.Outcome.Issue[0].Diagnostics)
	// Output:
	// 400 not-supported
	// _outputFormat: "text/csv" is not supported; use application/fhir+ndjson, application/ndjson or ndjson
}

// ParseQuery keeps every pair in order, decoded; what it cannot read
// exactly is an error naming the pair, not a dropped parameter.
func ExampleParseQuery() {
	pairs, _ := bulkdata.ParseQuery("_type=Patient&_elements=id%2Cname&_type=Observation")
	for _, p := range pairs {
		fmt.Printf("%s=%s\n", p.Name, p.Value)
	}
	_, err := bulkdata.ParseQuery("_type=Patient;_since=2020")
	fmt.Println(err.Status)
	// Output:
	// _type=Patient
	// _elements=id,name
	// _type=Observation
	// 400
}
