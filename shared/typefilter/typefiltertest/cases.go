// Package typefiltertest holds a fixture of crafted resources and, for
// each search parameter type and modifier, _typeFilter cases with the ids
// they must select: an oracle worked out by hand from the R4 search rules,
// shared by the tests of package typefilter and of every source that
// evaluates _typeFilter.
package typefiltertest

import (
	"bytes"
	_ "embed"
)

// Resources is the fixture, one resource per line: Patients p1..p3,
// Observations o1..o5, RiskAssessments ra1, ra2, MedicationRequests mr1,
// mr2, Encounters e1, e2, Conditions c1, c2.
//
//go:embed resources.ndjson
var Resources []byte

// Lines returns the fixture's lines.
func Lines() [][]byte {
	return bytes.Split(bytes.TrimRight(Resources, "\n"), []byte("\n"))
}

// Case is one set of filters of one type (OR-ed) and the fixture ids of
// that type it selects, in fixture order.
type Case struct {
	Name    string
	Type    string
	Queries []string
	Want    []string
}

// Cases cover token, reference, date, string, quantity, number and uri
// parameters, their modifiers and prefixes, :missing, OR and AND.
var Cases = []Case{
	{"token code", "Observation", []string{"code=4548-4"}, []string{"o1", "o5"}},
	{"token system|code", "Observation", []string{"code=http://loinc.org|4548-4"}, []string{"o1", "o5"}},
	{"token wrong system", "Observation", []string{"code=http://snomed.info/sct|4548-4"}, nil},
	{"token system|", "Observation", []string{"code=http://loinc.org|"}, []string{"o1", "o2", "o5"}},
	{"token |code needs no system", "Observation", []string{"code=|4548-4"}, nil},
	{"token comma is OR", "Observation", []string{"code=4548-4,8310-5"}, []string{"o1", "o2", "o5"}},
	{"token primitive code", "Observation", []string{"status=final"}, []string{"o1", "o3", "o4"}},
	{"token :not", "Observation", []string{"status:not=final"}, []string{"o2", "o5"}},
	{"token :not of OR", "Observation", []string{"status:not=final,amended"}, []string{"o2"}},
	{"token :text on text", "Observation", []string{"code:text=hemo"}, []string{"o1"}},
	{"token :text on display", "Observation", []string{"code:text=body"}, []string{"o2"}},
	{"token identifier system|value", "Patient", []string{"identifier=urn:mrn|A1"}, []string{"p1"}},
	{"token identifier value", "Patient", []string{"identifier=B2"}, []string{"p2"}},
	{"token identifier other system", "Patient", []string{"identifier=urn:mrn|B2"}, nil},
	{"token gender", "Patient", []string{"gender=female"}, []string{"p1"}},
	{"token |code on a primitive", "Patient", []string{"gender=|female"}, []string{"p1"}},
	{"token system on a primitive cannot match", "Patient", []string{"gender=http://hl7.org/fhir/administrative-gender|female"}, nil},
	{"token boolean", "Patient", []string{"active=false"}, []string{"p2"}},
	{"token ContactPoint", "Patient", []string{"telecom=555-1234"}, []string{"p1"}},
	{"token _id", "Patient", []string{"_id=p2,p3"}, []string{"p2", "p3"}},
	{"token choice ofType", "Observation", []string{"value-concept=http://snomed.info/sct|8517006"}, []string{"o3"}},
	{"token boolean expression true", "Patient", []string{"deceased=true"}, []string{"p3"}},
	{"token boolean expression false", "Patient", []string{"deceased=false"}, []string{"p1", "p2"}},
	{"token :missing=true", "Patient", []string{"identifier:missing=true"}, []string{"p3"}},
	{"repeated parameter is AND", "Observation", []string{"status=final&category=laboratory"}, []string{"o1"}},
	{"repeated same parameter is AND", "Observation", []string{"status=final&status=preliminary"}, nil},
	{"filters are OR", "Patient", []string{"gender=male", "_id=p3"}, []string{"p2", "p3"}},
	{"reference Type/id", "Observation", []string{"subject=Patient/p1"}, []string{"o1"}},
	{"reference id", "Observation", []string{"subject=p2"}, []string{"o2"}},
	{"reference :Type", "Observation", []string{"subject:Patient=p2"}, []string{"o2"}},
	{"reference :Type other type", "Observation", []string{"subject:Group=p2"}, nil},
	{"reference resolve() is Patient", "Observation", []string{"patient=Patient/p1,g1"}, []string{"o1"}},
	{"reference to a Group", "Observation", []string{"subject=Group/g1"}, []string{"o3"}},
	{"reference absolute", "Observation", []string{"subject=http://other.example/fhir/Patient/p9"}, []string{"o5"}},
	{"reference relative misses absolute", "Observation", []string{"subject=Patient/p9"}, nil},
	{"reference patient of RiskAssessment", "RiskAssessment", []string{"patient=p1"}, []string{"ra1"}},
	{"reference :missing=false", "Observation", []string{"patient:missing=false"}, []string{"o1", "o2", "o5"}},
	{"date day", "Observation", []string{"date=2024-03-01"}, []string{"o1"}},
	{"date year contains dateTime, Period, year", "Observation", []string{"date=2024"}, []string{"o1", "o2", "o3"}},
	{"date instant", "Observation", []string{"date=2024-03-01T10:00:00Z"}, []string{"o1"}},
	{"date other time zone", "Observation", []string{"date=2024-03-01T11:00:00%2B01:00"}, []string{"o1"}},
	{"date minutes", "Observation", []string{"date=2024-03-01T10:00Z"}, []string{"o1"}},
	{"date gt", "Observation", []string{"date=gt2024-01-15"}, []string{"o1", "o2", "o3"}},
	{"date lt", "Observation", []string{"date=lt2024-01-15"}, []string{"o2", "o3"}},
	{"date ge", "Observation", []string{"date=ge2024-03-01"}, []string{"o1", "o3"}},
	{"date le", "Observation", []string{"date=le2024-01-31"}, []string{"o2", "o3"}},
	{"date le at the start", "Observation", []string{"date=le2024-01-01"}, nil},
	{"date sa", "Observation", []string{"date=sa2024-02"}, []string{"o1"}},
	{"date eb", "Observation", []string{"date=eb2024-02"}, []string{"o2"}},
	{"date ne", "Observation", []string{"date=ne2024-03-01"}, []string{"o2", "o3"}},
	{"date :missing=true", "Observation", []string{"date:missing=true"}, []string{"o4", "o5"}},
	{"date birthdate year", "Patient", []string{"birthdate=1980"}, []string{"p1", "p2"}},
	{"date birthdate month", "Patient", []string{"birthdate=1980-05"}, []string{"p1"}},
	{"date _lastUpdated gt", "Patient", []string{"_lastUpdated=gt2024-06-01"}, []string{"p2"}},
	{"date _lastUpdated zone", "Patient", []string{"_lastUpdated=2023-06-15T10:30:00Z"}, []string{"p3"}},
	{"string prefix, case and accents", "Patient", []string{"name=mul"}, []string{"p1", "p2"}},
	{"string accented search", "Patient", []string{"name=MÜLLER"}, []string{"p1"}},
	{"string :exact", "Patient", []string{"name:exact=Müller"}, []string{"p1"}},
	{"string :exact is exact", "Patient", []string{"name:exact=muller"}, nil},
	{"string :contains", "Patient", []string{"name:contains=LIN"}, []string{"p2"}},
	{"string given", "Patient", []string{"given=ann"}, []string{"p1"}},
	{"string not a prefix", "Patient", []string{"family=ller"}, nil},
	{"string address part", "Patient", []string{"address=bost"}, []string{"p1"}},
	{"string address-city", "Patient", []string{"address-city=Boston"}, []string{"p1"}},
	{"string :missing=true", "Patient", []string{"name:missing=true"}, []string{"p3"}},
	{"string choice value", "Observation", []string{"value-string=hi"}, []string{"o4"}},
	{"quantity precision", "Observation", []string{"value-quantity=7"}, []string{"o1"}},
	{"quantity exact precision", "Observation", []string{"value-quantity=7.20"}, []string{"o1"}},
	{"quantity outside precision", "Observation", []string{"value-quantity=7.3"}, nil},
	{"quantity gt with system and code", "Observation", []string{"value-quantity=gt37|http://unitsofmeasure.org|Cel"}, []string{"o2"}},
	{"quantity code without system", "Observation", []string{"value-quantity=37.5||Cel"}, []string{"o2"}},
	{"quantity unit without system", "Observation", []string{"value-quantity=37.5||C"}, []string{"o2"}},
	{"quantity other code", "Observation", []string{"value-quantity=37.5|http://unitsofmeasure.org|%25"}, nil},
	{"quantity lt", "Observation", []string{"value-quantity=lt10"}, []string{"o1"}},
	{"quantity ap", "Observation", []string{"value-quantity=ap35"}, []string{"o2"}},
	{"number eq", "RiskAssessment", []string{"probability=0.02"}, []string{"ra1"}},
	{"number gt", "RiskAssessment", []string{"probability=gt0.1"}, []string{"ra2"}},
	{"number le", "RiskAssessment", []string{"probability=le0.5"}, []string{"ra1", "ra2"}},
	{"number ne", "RiskAssessment", []string{"probability=ne0.02"}, []string{"ra2"}},
	{"uri exact", "Patient", []string{"_profile=http://example.org/StructureDefinition/p"}, []string{"p3"}},
	{"uri is exact", "Patient", []string{"_profile=http://example.org/"}, nil},
	{"uri :below", "Patient", []string{"_profile:below=http://example.org/"}, []string{"p3"}},
	{"uri :above", "Patient", []string{"_profile:above=http://example.org/StructureDefinition/p/x"}, []string{"p3"}},
	// choice elements and data types of other resources
	{"choice CodeableConcept", "MedicationRequest", []string{"code=860975"}, []string{"mr1"}},
	{"choice Reference", "MedicationRequest", []string{"medication=Medication/m1"}, []string{"mr2"}},
	{"dateTime month", "MedicationRequest", []string{"authoredon=2025-04"}, []string{"mr1"}},
	{"Timing event", "MedicationRequest", []string{"date=2025-04-05"}, []string{"mr1"}},
	{"Period within a day", "Encounter", []string{"date=2025-04-03"}, []string{"e1"}},
	{"open Period reaches the future", "Encounter", []string{"date=ge2030"}, []string{"e2"}},
	{"Coding", "Encounter", []string{"class=http://terminology.hl7.org/CodeSystem/v3-ActCode|IMP"}, []string{"e1"}},
	{"choice dateTime or Period", "Condition", []string{"onset-date=2024-07"}, []string{"c1"}},
	{"Period before", "Condition", []string{"onset-date=lt2023-03"}, []string{"c2"}},
	{"Period contained", "Condition", []string{"onset-date=2023"}, []string{"c2"}},
	{"CodeableConcept status", "Condition", []string{"clinical-status=active"}, []string{"c1"}},
	{"code :not without codings", "Condition", []string{"code:not=44054006"}, []string{"c2"}},
}
