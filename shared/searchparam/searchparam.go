// Package searchparam holds the FHIR R4 search parameter definitions: per
// resource type, each parameter's code, type, FHIRPath expression and
// canonical URL, generated (params_gen.go, `make searchparams`) from the
// official R4 SearchParameter Bundle, not typed by hand. It also knows the
// choice elements ("value[x]") of each resource, which a FHIRPath
// evaluator over JSON needs to find "valueQuantity" for "value".
package searchparam

import (
	"iter"
	"maps"
	"sort"
)

// Search parameter types (SearchParameter.type).
const (
	Number    = "number"
	Date      = "date"
	String    = "string"
	Token     = "token"
	Reference = "reference"
	Composite = "composite"
	Quantity  = "quantity"
	URI       = "uri"
	Special   = "special"
)

// Param is one search parameter of one resource type.
type Param struct {
	Code string
	Type string
	// Expression is the FHIRPath selecting the parameter's values in a
	// resource of this type ("" when R4 defines none, as for _text).
	Expression string
	// URL is the SearchParameter's canonical URL.
	URL string
}

// Lookup returns the parameter code of resource type typ.
func Lookup(typ, code string) (Param, bool) {
	ps := byType[typ]
	i := sort.Search(len(ps), func(i int) bool { return ps[i].Code >= code })
	if i < len(ps) && ps[i].Code == code {
		return ps[i], true
	}
	return Param{}, false
}

// ForType returns the parameters of resource type typ, sorted by code. The
// slice must not be modified.
func ForType(typ string) []Param { return byType[typ] }

// ChoiceTypes returns the types of the choice element at path (such as
// "Observation.value" for value[x]), or nil when path is no choice element.
func ChoiceTypes(path string) []string { return choiceTypes[path] }

// AllTypes yields every resource type that has search parameters.
func AllTypes() iter.Seq[string] { return maps.Keys(byType) }
