// Package fhir holds the FHIR R4 facts and JSON helpers the export core needs:
// OperationOutcome, the instant type, the list of R4 resource types, the Patient
// compartment (which elements tie a resource to a patient), mandatory root
// elements for _elements subsetting, and cheap peeks into raw resource JSON.
//
// Resources stay raw JSON ([]byte) everywhere: this package reads the few fields
// a filter needs without decoding whole resources.
package fhir
