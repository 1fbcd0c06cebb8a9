package fhir

import (
	"strings"
)

// r4Types lists every resource type of FHIR R4 (4.0.1).
var r4Types = []string{
	"Account", "ActivityDefinition", "AdverseEvent", "AllergyIntolerance", "Appointment",
	"AppointmentResponse", "AuditEvent", "Basic", "Binary", "BiologicallyDerivedProduct",
	"BodyStructure", "Bundle", "CapabilityStatement", "CarePlan", "CareTeam", "CatalogEntry",
	"ChargeItem", "ChargeItemDefinition", "Claim", "ClaimResponse", "ClinicalImpression",
	"CodeSystem", "Communication", "CommunicationRequest", "CompartmentDefinition",
	"Composition", "ConceptMap", "Condition", "Consent", "Contract", "Coverage",
	"CoverageEligibilityRequest", "CoverageEligibilityResponse", "DetectedIssue", "Device",
	"DeviceDefinition", "DeviceMetric", "DeviceRequest", "DeviceUseStatement",
	"DiagnosticReport", "DocumentManifest", "DocumentReference", "EffectEvidenceSynthesis",
	"Encounter", "Endpoint", "EnrollmentRequest", "EnrollmentResponse", "EpisodeOfCare",
	"EventDefinition", "Evidence", "EvidenceVariable", "ExampleScenario",
	"ExplanationOfBenefit", "FamilyMemberHistory", "Flag", "Goal", "GraphDefinition", "Group",
	"GuidanceResponse", "HealthcareService", "ImagingStudy", "Immunization",
	"ImmunizationEvaluation", "ImmunizationRecommendation", "ImplementationGuide",
	"InsurancePlan", "Invoice", "Library", "Linkage", "List", "Location", "Measure",
	"MeasureReport", "Media", "Medication", "MedicationAdministration", "MedicationDispense",
	"MedicationKnowledge", "MedicationRequest", "MedicationStatement", "MedicinalProduct",
	"MedicinalProductAuthorization", "MedicinalProductContraindication",
	"MedicinalProductIndication", "MedicinalProductIngredient", "MedicinalProductInteraction",
	"MedicinalProductManufactured", "MedicinalProductPackaged", "MedicinalProductPharmaceutical",
	"MedicinalProductUndesirableEffect", "MessageDefinition", "MessageHeader",
	"MolecularSequence", "NamingSystem", "NutritionOrder", "Observation",
	"ObservationDefinition", "OperationDefinition", "OperationOutcome", "Organization",
	"OrganizationAffiliation", "Parameters", "Patient", "PaymentNotice",
	"PaymentReconciliation", "Person", "PlanDefinition", "Practitioner", "PractitionerRole",
	"Procedure", "Provenance", "Questionnaire", "QuestionnaireResponse", "RelatedPerson",
	"RequestGroup", "ResearchDefinition", "ResearchElementDefinition", "ResearchStudy",
	"ResearchSubject", "RiskAssessment", "RiskEvidenceSynthesis", "Schedule",
	"SearchParameter", "ServiceRequest", "Slot", "Specimen", "SpecimenDefinition",
	"StructureDefinition", "StructureMap", "Subscription", "Substance",
	"SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein",
	"SubstanceReferenceInformation", "SubstanceSourceMaterial", "SubstanceSpecification",
	"SupplyDelivery", "SupplyRequest", "Task", "TerminologyCapabilities", "TestReport",
	"TestScript", "ValueSet", "VerificationResult", "VisionPrescription",
}

var r4TypeSet = func() map[string]bool {
	m := make(map[string]bool, len(r4Types))
	for _, t := range r4Types {
		m[t] = true
	}
	return m
}()

// IsResourceType reports whether name is an R4 resource type (case-sensitive).
func IsResourceType(name string) bool { return r4TypeSet[name] }

// IsID reports whether s is a FHIR id ([A-Za-z0-9\-\.]{1,64}) that names a
// resource: "." and ".." match the pattern but would be path segments in a
// URL, so they are refused.
func IsID(s string) bool {
	if len(s) == 0 || len(s) > 64 || strings.Trim(s, ".") == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
