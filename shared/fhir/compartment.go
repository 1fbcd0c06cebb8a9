package fhir

import (
	"sort"
	"strings"

	"github.com/tidwall/gjson"
)

// patientCompartment maps each resource type in the R4 Patient compartment
// (CompartmentDefinition/patient, FHIR 4.0.1) to the element paths behind the
// compartment's search parameters. A resource is in a patient's compartment
// when any Reference at one of these paths points at that Patient. Paths are
// dot-separated; arrays are walked at every step.
var patientCompartment = map[string][]string{
	"Account":                     {"subject"},
	"AdverseEvent":                {"subject"},
	"AllergyIntolerance":          {"patient", "recorder", "asserter"},
	"Appointment":                 {"participant.actor"},
	"AppointmentResponse":         {"actor"},
	"AuditEvent":                  {"agent.who", "entity.what"},
	"Basic":                       {"subject", "author"},
	"BodyStructure":               {"patient"},
	"CarePlan":                    {"subject", "activity.detail.performer"},
	"CareTeam":                    {"subject", "participant.member"},
	"ChargeItem":                  {"subject"},
	"Claim":                       {"patient", "payee.party"},
	"ClaimResponse":               {"patient"},
	"ClinicalImpression":          {"subject"},
	"Communication":               {"subject", "sender", "recipient"},
	"CommunicationRequest":        {"subject", "sender", "recipient", "requester"},
	"Composition":                 {"subject", "author", "attester.party"},
	"Condition":                   {"subject", "asserter"},
	"Consent":                     {"patient"},
	"Coverage":                    {"policyHolder", "subscriber", "beneficiary", "payor"},
	"CoverageEligibilityRequest":  {"patient"},
	"CoverageEligibilityResponse": {"patient"},
	"DetectedIssue":               {"patient"},
	"DeviceRequest":               {"subject", "performer"},
	"DeviceUseStatement":          {"subject"},
	"DiagnosticReport":            {"subject"},
	"DocumentManifest":            {"subject", "author", "recipient"},
	"DocumentReference":           {"subject", "author"},
	"Encounter":                   {"subject"},
	"EnrollmentRequest":           {"candidate"},
	"EpisodeOfCare":               {"patient"},
	"ExplanationOfBenefit":        {"patient", "payee.party"},
	"FamilyMemberHistory":         {"patient"},
	"Flag":                        {"subject"},
	"Goal":                        {"subject"},
	"Group":                       {"member.entity"},
	"ImagingStudy":                {"subject"},
	"Immunization":                {"patient"},
	"ImmunizationEvaluation":      {"patient"},
	"ImmunizationRecommendation":  {"patient"},
	"Invoice":                     {"subject", "recipient"},
	"List":                        {"subject", "source"},
	"MeasureReport":               {"subject"},
	"Media":                       {"subject"},
	"MedicationAdministration":    {"subject", "performer.actor"},
	"MedicationDispense":          {"subject", "receiver"},
	"MedicationRequest":           {"subject"},
	"MedicationStatement":         {"subject"},
	"MolecularSequence":           {"patient"},
	"NutritionOrder":              {"patient"},
	"Observation":                 {"subject", "performer"},
	"Patient":                     {"link.other"},
	"Person":                      {"link.target"},
	"Procedure":                   {"subject", "performer.actor"},
	"Provenance":                  {"target"},
	"QuestionnaireResponse":       {"subject", "author"},
	"RelatedPerson":               {"patient"},
	"RequestGroup":                {"subject", "action.participant"},
	"ResearchSubject":             {"individual"},
	"RiskAssessment":              {"subject"},
	"Schedule":                    {"actor"},
	"ServiceRequest":              {"subject", "performer"},
	"Specimen":                    {"subject"},
	"SupplyDelivery":              {"patient"},
	"SupplyRequest":               {"requester"},
	"VisionPrescription":          {"patient"},
}

// InPatientCompartment reports whether resources of type t can belong to the
// Patient compartment. Patient itself is included.
func InPatientCompartment(t string) bool {
	_, ok := patientCompartment[t]
	return ok
}

// PatientCompartmentTypes returns the resource types of the Patient
// compartment, sorted.
func PatientCompartmentTypes() []string {
	out := make([]string, 0, len(patientCompartment))
	for t := range patientCompartment {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// CompartmentPatients calls fn with the id of every Patient that resource (of
// type t) references through the Patient compartment's elements. For a
// Patient it reports the resource's own id first. It stops when fn returns
// false.
func CompartmentPatients(t string, resource []byte, fn func(id string) bool) {
	if t == "Patient" {
		if id := gjson.GetBytes(resource, "id"); id.Type == gjson.String {
			if !fn(id.Str) {
				return
			}
		}
	}
	for _, path := range patientCompartment[t] {
		cont := true
		walkReferences(gjson.ParseBytes(resource), strings.Split(path, "."), func(ref string) bool {
			if id, ok := PatientID(ref); ok {
				cont = fn(id)
			}
			return cont
		})
		if !cont {
			return
		}
	}
}

// walkReferences visits Reference.reference values found under path,
// descending into arrays at every step.
func walkReferences(v gjson.Result, path []string, fn func(string) bool) bool {
	if v.IsArray() {
		ok := true
		v.ForEach(func(_, item gjson.Result) bool {
			ok = walkReferences(item, path, fn)
			return ok
		})
		return ok
	}
	if len(path) == 0 {
		if r := v.Get("reference"); r.Type == gjson.String {
			return fn(r.Str)
		}
		return true
	}
	next := v.Get(gjson.Escape(path[0]))
	if !next.Exists() {
		return true
	}
	return walkReferences(next, path[1:], fn)
}

// PatientID extracts the id from a reference to a Patient: "Patient/123",
// "https://host/fhir/Patient/123" or "Patient/123/_history/2".
func PatientID(ref string) (string, bool) {
	if i := strings.Index(ref, "/_history/"); i >= 0 {
		ref = ref[:i]
	}
	i := strings.LastIndex(ref, "Patient/")
	if i < 0 || (i > 0 && ref[i-1] != '/') {
		return "", false
	}
	id := ref[i+len("Patient/"):]
	if id == "" || strings.ContainsAny(id, "/?#") {
		return "", false
	}
	return id, true
}

// CompartmentParam is one search parameter of the Patient compartment and
// the element path behind it.
type CompartmentParam struct {
	Name string // the search parameter, e.g. "subject"
	Path string // the element path, e.g. "subject" or "performer.actor"
}

// compartmentParamNames names the search parameters whose name is not the
// first step of their path.
var compartmentParamNames = map[string]string{
	"Appointment.participant.actor":      "actor",
	"CarePlan.activity.detail.performer": "performer",
	"Coverage.policyHolder":              "policy-holder",
	"EnrollmentRequest.candidate":        "subject",
}

// PatientCompartmentParams returns the search parameters that put resources
// of type t in a patient's compartment, in the order of the compartment
// definition. For Patient it leaves out the resource's own id (searched with
// _id).
func PatientCompartmentParams(t string) []CompartmentParam {
	paths := patientCompartment[t]
	out := make([]CompartmentParam, 0, len(paths))
	for _, p := range paths {
		name, ok := compartmentParamNames[t+"."+p]
		if !ok {
			name, _, _ = strings.Cut(p, ".")
		}
		out = append(out, CompartmentParam{Name: name, Path: p})
	}
	return out
}

// ReferencedPatients calls fn with the id of every Patient referenced at
// path (as returned by PatientCompartmentParams) in resource, until fn
// returns false.
func ReferencedPatients(resource []byte, path string, fn func(id string) bool) {
	walkReferences(gjson.ParseBytes(resource), strings.Split(path, "."), func(ref string) bool {
		if id, ok := PatientID(ref); ok {
			return fn(id)
		}
		return true
	})
}

// TargetsAnyType reports whether a Provenance's target references a
// resource of one of the types.
func TargetsAnyType(provenance []byte, types map[string]bool) bool {
	hit := false
	gjson.GetBytes(provenance, "target").ForEach(func(_, t gjson.Result) bool {
		ref := t.Get("reference").Str
		if i := strings.Index(ref, "/_history/"); i >= 0 {
			ref = ref[:i]
		}
		parts := strings.Split(ref, "/")
		hit = len(parts) >= 2 && types[parts[len(parts)-2]]
		return !hit
	})
	return hit
}

// ActiveMembers returns the ids of the Patients a Group lists as members,
// leaving out members marked inactive, in the Group's order.
func ActiveMembers(group []byte) []string {
	var ids []string
	gjson.GetBytes(group, "member").ForEach(func(_, m gjson.Result) bool {
		if !m.Get("inactive").Bool() {
			if pid, ok := PatientID(m.Get("entity.reference").Str); ok {
				ids = append(ids, pid)
			}
		}
		return true
	})
	return ids
}
