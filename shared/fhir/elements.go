package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unsafe"

	"github.com/tidwall/gjson"
)

// SubsettedSystem and SubsettedCode form the meta.tag that marks a resource
// whose elements were cut by _elements (checklist P-09).
const (
	SubsettedSystem = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
	SubsettedCode   = "SUBSETTED"
)

// mandatoryElements lists root elements with a minimum cardinality of 1 in
// FHIR R4, for the types bulk exports commonly carry. A choice element is
// written with "[x]". Every resource also keeps resourceType, id and meta.
var mandatoryElements = map[string][]string{
	"AdverseEvent":               {"actuality", "subject"},
	"AllergyIntolerance":         {"patient"},
	"Appointment":                {"status", "participant"},
	"AuditEvent":                 {"type", "recorded", "agent", "source"},
	"Basic":                      {"code"},
	"BodyStructure":              {"patient"},
	"CarePlan":                   {"status", "intent", "subject"},
	"ChargeItem":                 {"status", "code", "subject"},
	"Claim":                      {"status", "type", "use", "patient", "created", "provider", "priority", "insurance"},
	"ClaimResponse":              {"status", "type", "use", "patient", "created", "insurer", "outcome"},
	"ClinicalImpression":         {"status", "subject"},
	"Communication":              {"status"},
	"CommunicationRequest":       {"status"},
	"Composition":                {"status", "type", "date", "author", "title"},
	"Condition":                  {"subject"},
	"Consent":                    {"status", "scope", "category"},
	"Coverage":                   {"status", "beneficiary", "payor"},
	"DetectedIssue":              {"status"},
	"DeviceRequest":              {"intent", "code[x]", "subject"},
	"DeviceUseStatement":         {"status", "subject", "device"},
	"DiagnosticReport":           {"status", "code"},
	"DocumentManifest":           {"status", "content"},
	"DocumentReference":          {"status", "content"},
	"Encounter":                  {"status", "class"},
	"EpisodeOfCare":              {"status", "patient"},
	"ExplanationOfBenefit":       {"status", "type", "use", "patient", "created", "insurer", "provider", "outcome", "insurance"},
	"FamilyMemberHistory":        {"status", "patient", "relationship"},
	"Flag":                       {"status", "code", "subject"},
	"Goal":                       {"lifecycleStatus", "description", "subject"},
	"Group":                      {"type", "actual"},
	"ImagingStudy":               {"status", "subject"},
	"Immunization":               {"status", "vaccineCode", "patient", "occurrence[x]"},
	"ImmunizationEvaluation":     {"status", "patient", "targetDisease", "immunizationEvent", "doseStatus"},
	"ImmunizationRecommendation": {"patient", "date", "recommendation"},
	"Invoice":                    {"status"},
	"List":                       {"status", "mode"},
	"MeasureReport":              {"status", "type", "measure", "period"},
	"Media":                      {"status", "content"},
	"MedicationAdministration":   {"status", "medication[x]", "subject", "effective[x]"},
	"MedicationDispense":         {"status", "medication[x]"},
	"MedicationRequest":          {"status", "intent", "medication[x]", "subject"},
	"MedicationStatement":        {"status", "medication[x]", "subject"},
	"MolecularSequence":          {"coordinateSystem"},
	"NutritionOrder":             {"status", "intent", "patient", "dateTime"},
	"Observation":                {"status", "code"},
	"Procedure":                  {"status", "subject"},
	"Provenance":                 {"target", "recorded", "agent"},
	"QuestionnaireResponse":      {"status"},
	"RelatedPerson":              {"patient"},
	"RequestGroup":               {"status", "intent"},
	"ResearchSubject":            {"status", "study", "individual"},
	"RiskAssessment":             {"status", "subject"},
	"Schedule":                   {"actor"},
	"ServiceRequest":             {"status", "intent", "subject"},
	"SupplyRequest":              {"item[x]", "quantity"},
	"Task":                       {"status", "intent"},
	"VisionPrescription":         {"status", "created", "patient", "dateWritten", "prescriber"},
}

var elementNameRE = regexp.MustCompile(`^[a-z][A-Za-z0-9]*(\[x\])?$`)

// ParseElement validates one _elements entry ("Patient.name" or "name") and
// returns its type ("" when bare) and element name.
func ParseElement(s string) (typ, name string, err error) {
	parts := strings.Split(s, ".")
	switch len(parts) {
	case 1:
		name = parts[0]
	case 2:
		typ, name = parts[0], parts[1]
		if !IsResourceType(typ) {
			return "", "", fmt.Errorf("%q: %q is not a FHIR R4 resource type", s, typ)
		}
	default:
		return "", "", fmt.Errorf("%q: only root elements are allowed (Type.element or element)", s)
	}
	if !elementNameRE.MatchString(name) {
		return "", "", fmt.Errorf("%q: %q is not an element name", s, name)
	}
	return typ, name, nil
}

// ElementSelector decides which root elements _elements keeps, per type.
type ElementSelector struct {
	bare  []string
	typed map[string][]string
}

// NewElementSelector builds a selector from validated (type, name) pairs,
// where type is "" for a bare element.
func NewElementSelector(pairs [][2]string) *ElementSelector {
	s := &ElementSelector{typed: map[string][]string{}}
	for _, p := range pairs {
		name := strings.TrimSuffix(p[1], "[x]")
		if p[0] == "" {
			s.bare = append(s.bare, name)
		} else {
			s.typed[p[0]] = append(s.typed[p[0]], name)
		}
	}
	return s
}

// Applies reports whether any requested element applies to type t. When none
// does, resources of t are exported whole.
func (s *ElementSelector) Applies(t string) bool {
	return s != nil && (len(s.bare) > 0 || len(s.typed[t]) > 0)
}

// keeps reports whether root key of a t resource is kept. Choice elements
// ("value" → valueQuantity) and primitive extensions ("_birthDate") follow
// their element.
func (s *ElementSelector) keeps(t, key string) bool {
	switch key {
	case "resourceType", "id", "meta":
		return true
	}
	key = strings.TrimPrefix(key, "_")
	match := func(name string) bool {
		if key == name {
			return true
		}
		// A choice element: name followed by an upper-case type suffix.
		return len(key) > len(name) && strings.HasPrefix(key, name) && key[len(name)] >= 'A' && key[len(name)] <= 'Z'
	}
	for _, m := range mandatoryElements[t] {
		if match(strings.TrimSuffix(m, "[x]")) {
			return true
		}
	}
	for _, n := range s.bare {
		if match(n) {
			return true
		}
	}
	for _, n := range s.typed[t] {
		if match(n) {
			return true
		}
	}
	return false
}

// Subset returns resource (of type t) with only the selected and mandatory
// root elements, tagged SUBSETTED in meta.tag. Key order is kept. Resources
// of a type the selector does not apply to are returned unchanged.
func (s *ElementSelector) Subset(t string, resource []byte) ([]byte, error) {
	if !s.Applies(t) {
		return resource, nil
	}
	return s.AppendSubset(nil, t, resource)
}

// AppendSubset appends Subset(t, resource) to dst and returns the extended
// slice (a copy of resource when the selector does not apply to t), so a
// caller that copies each line away before the next can reuse one buffer:
// a fresh buffer per line was most of what an _elements export allocated.
func (s *ElementSelector) AppendSubset(dst []byte, t string, resource []byte) ([]byte, error) {
	if !s.Applies(t) {
		return append(dst, resource...), nil
	}
	if out, ok, err := s.subsetScan(dst, t, resource); ok {
		return out, err
	}
	out, err := s.subsetGJSON(t, resource)
	if err != nil {
		return nil, err
	}
	return append(dst, out...), nil
}

// subsetScan is Subset in one pass of the Peek scanner over the root
// members, copying the kept ones as they are; ok is false (and the gjson
// walk decides) for a root key with an escape or bytes that do not scan.
// It was the gjson walk of every root element that made _elements exports
// slow (about 60 % of their CPU).
func (s *ElementSelector) subsetScan(dst []byte, t string, resource []byte) (out []byte, ok bool, err error) {
	p := peeker{b: resource}
	p.ws()
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		return nil, false, nil
	}
	out = slices.Grow(dst, len(resource)+len(subsettedTag)+16)
	out = append(out, '{')
	first, sawMeta := true, false
	scanned := p.object(0, func(k span, depth int) bool {
		if k.escaped {
			return false
		}
		start := p.i
		if !p.value(depth + 1) {
			return false
		}
		key := unsafe.String(unsafe.SliceData(p.b[k.start:k.end]), k.end-k.start)
		if !s.keeps(t, key) {
			return true
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, p.b[k.start-1:k.end+1]...)
		out = append(out, ':')
		val := p.b[start:p.i]
		if key == "meta" {
			sawMeta = true
			tagged, merr := appendTagSubsetted(out, val)
			if merr != nil {
				err = merr
				return false
			}
			out = tagged
			return true
		}
		out = append(out, val...)
		return true
	})
	if err != nil {
		return nil, true, fmt.Errorf("subset %s: %w", t, err)
	}
	if !scanned {
		return nil, false, nil
	}
	if !sawMeta {
		if !first {
			out = append(out, ',')
		}
		out = append(out, `"meta":{"tag":[`+subsettedTag+`]}`...)
	}
	return append(out, '}'), true, nil
}

// subsetGJSON is Subset by a gjson walk of the root members.
func (s *ElementSelector) subsetGJSON(t string, resource []byte) ([]byte, error) {
	// gjson.ParseBytes copies the whole line into a string; the results
	// only point into it until they are copied into out below, and
	// resource is not changed meanwhile, so it is read in place.
	root := gjson.Parse(unsafe.String(unsafe.SliceData(resource), len(resource)))
	if !root.IsObject() {
		return nil, fmt.Errorf("subset %s: resource is not a JSON object", t)
	}
	var out bytes.Buffer
	out.Grow(len(resource))
	out.WriteByte('{')
	first := true
	sawMeta := false
	var err error
	root.ForEach(func(k, v gjson.Result) bool {
		if !s.keeps(t, k.Str) {
			return true
		}
		if !first {
			out.WriteByte(',')
		}
		first = false
		out.WriteString(k.Raw)
		out.WriteByte(':')
		if k.Str == "meta" {
			sawMeta = true
			var meta []byte
			meta, err = tagSubsetted([]byte(v.Raw))
			if err != nil {
				return false
			}
			out.Write(meta)
			return true
		}
		out.WriteString(v.Raw)
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("subset %s: %w", t, err)
	}
	if !sawMeta {
		if !first {
			out.WriteByte(',')
		}
		out.WriteString(`"meta":{"tag":[` + subsettedTag + `]}`)
	}
	out.WriteByte('}')
	return out.Bytes(), nil
}

const subsettedTag = `{"system":"` + SubsettedSystem + `","code":"` + SubsettedCode + `"}`

// tagSubsetted adds the SUBSETTED tag to a meta object unless it is there.
func tagSubsetted(meta []byte) ([]byte, error) { return appendTagSubsetted(nil, meta) }

// appendTagSubsetted appends tagSubsetted(meta) to dst.
func appendTagSubsetted(dst, meta []byte) ([]byte, error) {
	if n := len(meta); n >= 2 && meta[0] == '{' && meta[n-1] == '}' &&
		!bytes.ContainsAny(meta, " \t\r\n\\") && !bytes.Contains(meta, []byte(`"tag"`)) {
		// A compact meta with no tag (no key can be "tag" without those
		// bytes, escapes aside): the tag goes at its end, as below.
		dst = append(dst, meta[:n-1]...)
		if n > 2 {
			dst = append(dst, ',')
		}
		return append(dst, `"tag":[`+subsettedTag+`]}`...), nil
	}
	out, err := tagSubsettedGJSON(meta)
	if err != nil {
		return nil, err
	}
	return append(dst, out...), nil
}

// tagSubsettedGJSON is tagSubsetted for any meta object, by a gjson walk.
func tagSubsettedGJSON(meta []byte) ([]byte, error) {
	m := gjson.ParseBytes(meta)
	if !m.IsObject() {
		return nil, fmt.Errorf("meta is not an object")
	}
	tags := m.Get("tag")
	has := false
	tags.ForEach(func(_, tag gjson.Result) bool {
		if tag.Get("code").Str == SubsettedCode && tag.Get("system").Str == SubsettedSystem {
			has = true
		}
		return !has
	})
	if has {
		return meta, nil
	}
	var out bytes.Buffer
	out.WriteByte('{')
	first := true
	m.ForEach(func(k, v gjson.Result) bool {
		if k.Str == "tag" {
			return true
		}
		if !first {
			out.WriteByte(',')
		}
		first = false
		out.WriteString(k.Raw)
		out.WriteByte(':')
		out.WriteString(v.Raw)
		return true
	})
	if !first {
		out.WriteByte(',')
	}
	out.WriteString(`"tag":[`)
	tags.ForEach(func(_, tag gjson.Result) bool {
		out.WriteString(tag.Raw)
		out.WriteByte(',')
		return true
	})
	out.WriteString(subsettedTag + "]}")
	if bytes.ContainsAny(meta, " \t\r\n") {
		return compact(out.Bytes())
	}
	// Pieces of a meta with no blank anywhere are compact already:
	// compacting again was a sixth of an _elements export's CPU.
	return out.Bytes(), nil
}

func compact(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
