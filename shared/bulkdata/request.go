package bulkdata

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// Level is the export level named by the kick-off URL.
type Level string

// The three export levels of the IG.
const (
	LevelSystem  Level = "system"
	LevelPatient Level = "patient"
	LevelGroup   Level = "group"
)

// NDJSON is the one output format bulkfhir writes.
const NDJSON = "application/fhir+ndjson"

// Codes of http://hl7.org/fhir/uv/bulkdata/ValueSet/include-associated-data.
const (
	LatestProvenanceResources   = "LatestProvenanceResources"
	RelevantProvenanceResources = "RelevantProvenanceResources"
)

// Request is a validated kick-off. It is stored with the job, so it is plain
// JSON-serialisable data.
type Request struct {
	Level                 Level      `json:"level"`
	GroupID               string     `json:"groupId,omitempty"`
	OutputFormat          string     `json:"outputFormat"`
	Since                 *time.Time `json:"since,omitempty"`
	Until                 *time.Time `json:"until,omitempty"`
	Types                 []string   `json:"types,omitempty"`
	Elements              []string   `json:"elements,omitempty"` // "Type.name" or "name"
	Patients              []string   `json:"patients,omitempty"` // Patient ids
	TypeFilters           []string   `json:"typeFilters,omitempty"`
	IncludeAssociatedData []string   `json:"includeAssociatedData,omitempty"`
	// MaxFileSize and MinFileSize are _maximumFileSize and _minimumFileSize
	// in bytes (0: not given); the service fits them to its own bounds.
	MaxFileSize int64 `json:"maxFileSize,omitempty"`
	MinFileSize int64 `json:"minFileSize,omitempty"`
	// AllowPartialManifests is allowPartialManifests=true (STU3, N-04):
	// the manifest is paged and a 202 may carry the files done so far.
	AllowPartialManifests bool `json:"allowPartialManifests,omitempty"`
	// OrganizeOutputBy is the honoured organizeOutputBy (STU3, N-03):
	// "Patient" or empty.
	OrganizeOutputBy string `json:"organizeOutputBy,omitempty"`
	// Lenient is set by Prefer: handling=lenient.
	Lenient bool `json:"lenient,omitempty"`
	// SeparateExportStatus is set by Prefer: separate-export-status (STU3).
	SeparateExportStatus bool `json:"separateExportStatus,omitempty"`
	// Ignored holds one warning per parameter dropped under lenient handling;
	// they are reported in the manifest's error files.
	Ignored []fhir.Issue `json:"ignored,omitempty"`
}

// Error is a rejected kick-off: an HTTP status and the OperationOutcome body.
type Error struct {
	Status  int
	Outcome fhir.OperationOutcome
	// RetryAfter is sent as Retry-After when set (429, 503).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	var parts []string
	for _, is := range e.Outcome.Issue {
		parts = append(parts, is.Diagnostics)
	}
	return fmt.Sprintf("kick-off rejected (%d): %s", e.Status, strings.Join(parts, "; "))
}

// NewError returns an Error with one issue.
func NewError(status int, code, diagnostics string) *Error {
	return &Error{Status: status, Outcome: fhir.Outcome(fhir.SeverityError, code, diagnostics)}
}

// ElementPairs returns Elements as (type, name) pairs for fhir.NewElementSelector.
func (r *Request) ElementPairs() [][2]string {
	out := make([][2]string, 0, len(r.Elements))
	for _, e := range r.Elements {
		typ, name, err := fhir.ParseElement(e)
		if err != nil {
			continue // validated at kick-off
		}
		out = append(out, [2]string{typ, name})
	}
	return out
}

// ElementsFor returns the _elements names (without type prefix) that apply
// to type t: those named for t and the bare ones.
func (r *Request) ElementsFor(t string) []string {
	var out []string
	for _, p := range r.ElementPairs() {
		if p[0] == "" || p[0] == t {
			out = append(out, p[1])
		}
	}
	return out
}

// TypeFiltersFor returns the _typeFilter queries (without "Type?") for type t.
func (r *Request) TypeFiltersFor(t string) []string {
	var out []string
	for _, f := range r.TypeFilters {
		if typ, q, ok := strings.Cut(f, "?"); ok && typ == t {
			out = append(out, q)
		}
	}
	return out
}

// Problem collects parameter problems during validation. Under lenient
// handling they become warnings; otherwise the kick-off is rejected.
type Problems struct {
	issues []fhir.Issue
	// refused is set when a problem may not be dropped under lenient
	// handling: dropping it could widen the export.
	refused bool
}

// Add records that parameter name was rejected for reason. Lenient handling
// drops it only if Droppable(name).
func (p *Problems) Add(code, name, reason string) {
	if !Droppable(name) {
		p.refused = true
	}
	p.add(code, name, reason)
}

// Narrow records a problem that lenient handling may drop even for a
// parameter that is otherwise not droppable, because the caller's way of
// dropping it makes the export narrower (a whole _typeFilter left out and
// its type with it), never wider.
func (p *Problems) Narrow(code, name, reason string) { p.add(code, name, reason) }

// Refuse records a problem lenient handling does not drop.
func (p *Problems) Refuse(code, name, reason string) {
	p.refused = true
	p.add(code, name, reason)
}

func (p *Problems) add(code, name, reason string) {
	p.issues = append(p.issues, fhir.Issue{
		Severity:    fhir.SeverityError,
		Code:        code,
		Diagnostics: name + ": " + reason,
		Expression:  []string{name},
	})
}

// Empty reports whether nothing was recorded.
func (p *Problems) Empty() bool { return len(p.issues) == 0 }

// Resolve either rejects the request (strict, or a problem lenient handling
// may not drop) or moves the problems into req.Ignored as warnings
// (lenient). It returns nil when there is nothing to
// reject.
func (p *Problems) Resolve(req *Request) *Error {
	if p.Empty() {
		return nil
	}
	if !req.Lenient || p.refused {
		return &Error{Status: http.StatusBadRequest, Outcome: fhir.NewOutcome(p.issues...)}
	}
	for _, is := range p.issues {
		is.Severity = fhir.SeverityWarning
		is.Diagnostics = "ignored under handling=lenient: " + is.Diagnostics
		req.Ignored = append(req.Ignored, is)
	}
	p.issues = nil
	return nil
}
