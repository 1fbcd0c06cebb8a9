package fhir

import (
	"slices"
	"strings"
	"unsafe"

	"github.com/tidwall/gjson"
)

// patientCompartment maps each resource type in the R4 Patient compartment
// (CompartmentDefinition/patient, FHIR 4.0.1) to the compartment's search
// parameters, in the definition's order, each with the element paths behind
// it (from the parameter's FHIRPath expression, ".where(resolve() is
// Patient)" read as "a Reference to a Patient"). A resource is in a
// patient's compartment when any Reference at one of these paths points at
// that Patient. Paths are dot-separated; arrays are walked at every step.
// TestPatientCompartmentMatchesR4 checks the table against the official
// definitions (testdata/r4-patient-compartment.json, see
// internal/compartmentgen).
var patientCompartment = map[string][]CompartmentParam{
	"Account":                     {{"subject", []string{"subject"}}},
	"AdverseEvent":                {{"subject", []string{"subject"}}},
	"AllergyIntolerance":          {{"patient", []string{"patient"}}, {"recorder", []string{"recorder"}}, {"asserter", []string{"asserter"}}},
	"Appointment":                 {{"actor", []string{"participant.actor"}}},
	"AppointmentResponse":         {{"actor", []string{"actor"}}},
	"AuditEvent":                  {{"patient", []string{"agent.who", "entity.what"}}},
	"Basic":                       {{"patient", []string{"subject"}}, {"author", []string{"author"}}},
	"BodyStructure":               {{"patient", []string{"patient"}}},
	"CarePlan":                    {{"patient", []string{"subject"}}, {"performer", []string{"activity.detail.performer"}}},
	"CareTeam":                    {{"patient", []string{"subject"}}, {"participant", []string{"participant.member"}}},
	"ChargeItem":                  {{"subject", []string{"subject"}}},
	"Claim":                       {{"patient", []string{"patient"}}, {"payee", []string{"payee.party"}}},
	"ClaimResponse":               {{"patient", []string{"patient"}}},
	"ClinicalImpression":          {{"subject", []string{"subject"}}},
	"Communication":               {{"subject", []string{"subject"}}, {"sender", []string{"sender"}}, {"recipient", []string{"recipient"}}},
	"CommunicationRequest":        {{"subject", []string{"subject"}}, {"sender", []string{"sender"}}, {"recipient", []string{"recipient"}}, {"requester", []string{"requester"}}},
	"Composition":                 {{"subject", []string{"subject"}}, {"author", []string{"author"}}, {"attester", []string{"attester.party"}}},
	"Condition":                   {{"patient", []string{"subject"}}, {"asserter", []string{"asserter"}}},
	"Consent":                     {{"patient", []string{"patient"}}},
	"Coverage":                    {{"policy-holder", []string{"policyHolder"}}, {"subscriber", []string{"subscriber"}}, {"beneficiary", []string{"beneficiary"}}, {"payor", []string{"payor"}}},
	"CoverageEligibilityRequest":  {{"patient", []string{"patient"}}},
	"CoverageEligibilityResponse": {{"patient", []string{"patient"}}},
	"DetectedIssue":               {{"patient", []string{"patient"}}},
	"DeviceRequest":               {{"subject", []string{"subject"}}, {"performer", []string{"performer"}}},
	"DeviceUseStatement":          {{"subject", []string{"subject"}}},
	"DiagnosticReport":            {{"subject", []string{"subject"}}},
	"DocumentManifest":            {{"subject", []string{"subject"}}, {"author", []string{"author"}}, {"recipient", []string{"recipient"}}},
	"DocumentReference":           {{"subject", []string{"subject"}}, {"author", []string{"author"}}},
	"Encounter":                   {{"subject", []string{"subject"}}},
	"EnrollmentRequest":           {{"subject", []string{"candidate"}}},
	"EpisodeOfCare":               {{"patient", []string{"patient"}}},
	"ExplanationOfBenefit":        {{"patient", []string{"patient"}}, {"payee", []string{"payee.party"}}},
	"FamilyMemberHistory":         {{"patient", []string{"patient"}}},
	"Flag":                        {{"patient", []string{"subject"}}},
	"Goal":                        {{"patient", []string{"subject"}}},
	"Group":                       {{"member", []string{"member.entity"}}},
	"ImagingStudy":                {{"patient", []string{"subject"}}},
	"Immunization":                {{"patient", []string{"patient"}}},
	"ImmunizationEvaluation":      {{"patient", []string{"patient"}}},
	"ImmunizationRecommendation":  {{"patient", []string{"patient"}}},
	"Invoice":                     {{"subject", []string{"subject"}}, {"patient", []string{"subject"}}, {"recipient", []string{"recipient"}}},
	"List":                        {{"subject", []string{"subject"}}, {"source", []string{"source"}}},
	"MeasureReport":               {{"patient", []string{"subject"}}},
	"Media":                       {{"subject", []string{"subject"}}},
	"MedicationAdministration":    {{"patient", []string{"subject"}}, {"performer", []string{"performer.actor"}}, {"subject", []string{"subject"}}},
	"MedicationDispense":          {{"subject", []string{"subject"}}, {"patient", []string{"subject"}}, {"receiver", []string{"receiver"}}},
	"MedicationRequest":           {{"subject", []string{"subject"}}},
	"MedicationStatement":         {{"subject", []string{"subject"}}},
	"MolecularSequence":           {{"patient", []string{"patient"}}},
	"NutritionOrder":              {{"patient", []string{"patient"}}},
	"Observation":                 {{"subject", []string{"subject"}}, {"performer", []string{"performer"}}},
	"Patient":                     {{"link", []string{"link.other"}}},
	"Person":                      {{"patient", []string{"link.target"}}},
	"Procedure":                   {{"patient", []string{"subject"}}, {"performer", []string{"performer.actor"}}},
	"Provenance":                  {{"patient", []string{"target"}}},
	"QuestionnaireResponse":       {{"subject", []string{"subject"}}, {"author", []string{"author"}}},
	"RelatedPerson":               {{"patient", []string{"patient"}}},
	"RequestGroup":                {{"subject", []string{"subject"}}, {"participant", []string{"action.participant"}}},
	"ResearchSubject":             {{"individual", []string{"individual"}}},
	"RiskAssessment":              {{"subject", []string{"subject"}}},
	"Schedule":                    {{"actor", []string{"actor"}}},
	"ServiceRequest":              {{"subject", []string{"subject"}}, {"performer", []string{"performer"}}},
	"Specimen":                    {{"subject", []string{"subject"}}},
	"SupplyDelivery":              {{"patient", []string{"patient"}}},
	"SupplyRequest":               {{"subject", []string{"deliverTo"}}},
	"Task":                        {{"patient", []string{"for"}}, {"focus", []string{"focus"}}},
	"VisionPrescription":          {{"patient", []string{"patient"}}},
}

// InPatientCompartment reports whether resources of type t can belong to the
// Patient compartment. Patient itself is included.
func InPatientCompartment(t string) bool {
	_, ok := patientCompartment[t]
	return ok
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
	referencedPatients(resource, compartmentSplitPaths[t], fn)
}

// compartmentSplitPaths is compartmentPaths of every type, split at the
// dots once: CompartmentPatients runs for every line of a Patient or Group
// export.
var compartmentSplitPaths = func() map[string][][]string {
	m := make(map[string][][]string, len(patientCompartment))
	for t := range patientCompartment {
		m[t] = splitPaths(compartmentPaths(t))
	}
	return m
}()

func splitPaths(paths []string) [][]string {
	out := make([][]string, len(paths))
	for i, p := range paths {
		out[i] = strings.Split(p, ".")
	}
	return out
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
// the element paths behind it.
type CompartmentParam struct {
	Name  string   // the search parameter, e.g. "subject"
	Paths []string // the element paths, e.g. "subject" or "performer.actor"
}

// PatientCompartmentParams returns the search parameters that put resources
// of type t in a patient's compartment, in the order of the compartment
// definition. Two may cover the same paths (Invoice's patient and subject).
// For Patient it leaves out the resource's own id (searched with _id).
func PatientCompartmentParams(t string) []CompartmentParam {
	return slices.Clone(patientCompartment[t])
}

// compartmentPaths lists the distinct element paths of t's compartment
// parameters.
func compartmentPaths(t string) []string {
	var out []string
	for _, p := range patientCompartment[t] {
		for _, path := range p.Paths {
			if !slices.Contains(out, path) {
				out = append(out, path)
			}
		}
	}
	return out
}

// ReferencedPatients calls fn with the id of every Patient referenced at
// any of paths (as a CompartmentParam lists them) in resource, until fn
// returns false.
func ReferencedPatients(resource []byte, paths []string, fn func(id string) bool) {
	referencedPatients(resource, splitPaths(paths), fn)
}

func referencedPatients(resource []byte, paths [][]string, fn func(id string) bool) {
	// The walk reads resource in place (gjson.ParseBytes would copy the
	// whole line first); resource is not changed meanwhile, and each id
	// is copied before fn sees it, so nothing fn keeps points into it.
	doc := gjson.Parse(unsafe.String(unsafe.SliceData(resource), len(resource)))
	for _, path := range paths {
		cont := true
		walkReferences(doc, path, func(ref string) bool {
			if id, ok := PatientID(ref); ok {
				cont = fn(strings.Clone(id))
			}
			return cont
		})
		if !cont {
			return
		}
	}
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
