package fhir

import "encoding/json"

// Issue severities and codes used by bulkfhir (a subset of the R4 value sets
// http://hl7.org/fhir/issue-severity and http://hl7.org/fhir/issue-type).
const (
	SeverityFatal       = "fatal"
	SeverityError       = "error"
	SeverityWarning     = "warning"
	SeverityInformation = "information"

	CodeInvalid       = "invalid"
	CodeRequired      = "required"
	CodeValue         = "value"
	CodeNotSupported  = "not-supported"
	CodeNotFound      = "not-found"
	CodeSecurity      = "security"
	CodeLogin         = "login"
	CodeForbidden     = "forbidden"
	CodeThrottled     = "throttled"
	CodeTransient     = "transient"
	CodeException     = "exception"
	CodeProcessing    = "processing"
	CodeInformational = "informational"
	CodeDeleted       = "deleted"
	CodeStructure     = "structure"
	CodeTooCostly     = "too-costly"
	CodeIncomplete    = "incomplete"
	CodeTimeout       = "timeout"
)

// Issue is one OperationOutcome.issue.
type Issue struct {
	Severity    string   `json:"severity"`
	Code        string   `json:"code"`
	Diagnostics string   `json:"diagnostics,omitempty"`
	Expression  []string `json:"expression,omitempty"`
}

// OperationOutcome is the FHIR resource every bulkfhir error is reported as.
type OperationOutcome struct {
	ResourceType string  `json:"resourceType"`
	Issue        []Issue `json:"issue"`
}

// NewOutcome returns an OperationOutcome holding the given issues.
func NewOutcome(issues ...Issue) OperationOutcome {
	if issues == nil {
		issues = []Issue{}
	}
	return OperationOutcome{ResourceType: "OperationOutcome", Issue: issues}
}

// Outcome returns an OperationOutcome with one issue.
func Outcome(severity, code, diagnostics string) OperationOutcome {
	return NewOutcome(Issue{Severity: severity, Code: code, Diagnostics: diagnostics})
}

// JSON renders the outcome as compact JSON. It cannot fail for this type.
func (o OperationOutcome) JSON() []byte {
	b, err := json.Marshal(o)
	if err != nil {
		panic("fhir: marshal OperationOutcome: " + err.Error())
	}
	return b
}
