package bulkdata

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// param is one kick-off parameter as received, before validation.
type param struct {
	name  string
	value string
	// kind is the Parameters value[x] suffix ("String", "Reference", …) or
	// "query" for a query-string parameter.
	kind string
}

// Kickoff is everything Parse needs from an HTTP kick-off request.
type Kickoff struct {
	Method  string
	Level   Level
	GroupID string
	// RawQuery is the undecoded query string; Parse reads it with
	// ParseQuery, so nothing in it is dropped.
	RawQuery string
	// ContentType and Body are read for POST.
	ContentType string
	Body        []byte
	Prefer      Preferences
	Now         time.Time
}

// MaxBodyBytes bounds a POST kick-off body.
const MaxBodyBytes = 1 << 20

// Parse validates a kick-off into a Request. Source-specific checks (whether
// a type or a _typeFilter is supported, whether a Group exists) are left to
// the export service.
func Parse(k Kickoff) (*Request, *Error) {
	req := &Request{
		Level:                k.Level,
		GroupID:              k.GroupID,
		OutputFormat:         NDJSON,
		Lenient:              k.Prefer.Lenient,
		SeparateExportStatus: k.Prefer.SeparateExportStatus,
	}
	if k.Level == LevelGroup && !fhir.IsID(k.GroupID) {
		// Checked here too (the handler checks the path): an id such as
		// ".." would become another path on an upstream server.
		return nil, NewError(http.StatusBadRequest, fhir.CodeValue, fmt.Sprintf("Group/%s: not a FHIR id", clip(k.GroupID)))
	}
	params, err := collect(k)
	if err != nil {
		return nil, err
	}
	var probs Problems
	validate(req, params, k.Now, &probs)
	if err := probs.Resolve(req); err != nil {
		return nil, err
	}
	return req, nil
}

// collect gathers query and body parameters into one list.
func collect(k Kickoff) ([]param, *Error) {
	query, qerr := ParseQuery(k.RawQuery)
	if qerr != nil {
		return nil, qerr
	}
	params := make([]param, 0, len(query))
	for _, p := range query {
		params = append(params, param{name: p.Name, value: p.Value, kind: "query"})
	}
	switch k.Method {
	case http.MethodGet:
	case http.MethodPost:
		if len(strings.TrimSpace(string(k.Body))) == 0 {
			break // a POST without a body is a kick-off without parameters
		}
		mt, _, err := mime.ParseMediaType(k.ContentType)
		if err != nil || (mt != "application/fhir+json" && mt != "application/json") {
			return nil, NewError(http.StatusUnsupportedMediaType, fhir.CodeNotSupported,
				fmt.Sprintf("Content-Type: a POST kick-off carries a FHIR Parameters resource as application/fhir+json, got %q", k.ContentType))
		}
		body, perr := parseParameters(k.Body)
		if perr != nil {
			return nil, perr
		}
		params = append(params, body...)
	default:
		return nil, NewError(http.StatusMethodNotAllowed, fhir.CodeNotSupported,
			"method "+k.Method+" is not allowed for $export: use GET or POST")
	}
	return params, nil
}

// parseParameters reads a FHIR Parameters resource into params.
func parseParameters(body []byte) ([]param, *Error) {
	var doc struct {
		ResourceType string                       `json:"resourceType"`
		Parameter    []map[string]json.RawMessage `json:"parameter"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, NewError(http.StatusBadRequest, fhir.CodeStructure,
			"body: not a valid FHIR Parameters resource: "+err.Error())
	}
	if doc.ResourceType != "Parameters" {
		return nil, NewError(http.StatusBadRequest, fhir.CodeStructure,
			fmt.Sprintf("body: resourceType must be Parameters, got %q", doc.ResourceType))
	}
	var out []param
	for i, p := range doc.Parameter {
		var name string
		if raw, ok := p["name"]; !ok || json.Unmarshal(raw, &name) != nil || name == "" {
			return nil, NewError(http.StatusBadRequest, fhir.CodeStructure,
				fmt.Sprintf("body: Parameters.parameter[%d] has no name", i))
		}
		found := false
		for key, raw := range p {
			kind, ok := strings.CutPrefix(key, "value")
			if !ok || kind == "" {
				continue
			}
			v, err := valueString(kind, raw)
			if err != nil {
				return nil, NewError(http.StatusBadRequest, fhir.CodeStructure,
					fmt.Sprintf("%s: parameter[%d].%s: %v", name, i, key, err))
			}
			out = append(out, param{name: name, value: v, kind: kind})
			found = true
		}
		if !found {
			return nil, NewError(http.StatusBadRequest, fhir.CodeStructure,
				fmt.Sprintf("%s: parameter[%d] has no value[x]", name, i))
		}
	}
	return out, nil
}

// valueString turns a Parameters value[x] into the string the query form
// would carry: a Reference becomes its reference, a Coding its code.
func valueString(kind string, raw json.RawMessage) (string, error) {
	switch kind {
	case "Reference":
		var r struct {
			Reference string `json:"reference"`
		}
		if err := json.Unmarshal(raw, &r); err != nil || r.Reference == "" {
			return "", fmt.Errorf("want a Reference with a reference")
		}
		return r.Reference, nil
	case "Coding":
		var c struct {
			Code string `json:"code"`
		}
		if err := json.Unmarshal(raw, &c); err != nil || c.Code == "" {
			return "", fmt.Errorf("want a Coding with a code")
		}
		return c.Code, nil
	case "Boolean":
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return "", fmt.Errorf("want a boolean")
		}
		return fmt.Sprint(b), nil
	case "Integer", "PositiveInt", "UnsignedInt", "Decimal", "Integer64":
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return "", fmt.Errorf("want a number")
		}
		return n.String(), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("want a string value")
	}
	return s, nil
}

var typeFilterSplit = regexp.MustCompile(`,\s*([A-Z][A-Za-z]+\?)`)

// splitList splits a comma-separated value, trims spaces and drops empties.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// splitTypeFilters splits an STU2 comma-joined _typeFilter only at commas
// that start a new "Type?" query, so commas inside a search value (FHIR's
// OR) survive.
func splitTypeFilters(v string) []string {
	marked := typeFilterSplit.ReplaceAllString(v, "\x00$1")
	var out []string
	for _, s := range strings.Split(marked, "\x00") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Search result parameters a _typeFilter query must not carry (P-14, P-15).
var bannedFilterParams = map[string]bool{
	"_include": true, "_revinclude": true, "_sort": true, "_elements": true, "_count": true,
	"_summary": true, "_total": true, "_contained": true, "_containedType": true, "_format": true,
}

// paramRule says how one kick-off parameter is read.
type paramRule struct {
	// single: the parameter may be given once; a repeat is refused, lenient
	// or not (which of two values would be meant is unknowable).
	single bool
	// lenient is what Prefer: handling=lenient does with a value the server
	// cannot honour. Empty means the value is refused as under strict
	// handling, because dropping it could widen what is exported.
	lenient string
}

// paramRules is the one list of the parameters a kick-off accepts, and what
// lenient handling may drop. A parameter not listed is refused (a typo such
// as _typeFiltr must not export everything). The table of lenient
// handling in docs/behaviour.md is this list.
var paramRules = map[string]paramRule{
	"_outputFormat":         {single: true, lenient: "an unsupported format is ignored; the output is application/fhir+ndjson"},
	"_since":                {single: true},
	"_until":                {single: true},
	"_type":                 {lenient: "an unknown type, or one outside the Patient compartment at patient or group level, is left out; if no type is left the kick-off is refused"},
	"_elements":             {},
	"patient":               {},
	"_typeFilter":           {},
	"includeAssociatedData": {lenient: "an unsupported code is ignored (less associated data, never more)"},
	"organizeOutputBy":      {single: true, lenient: "a type other than Patient is ignored; files are organized by resource type"},
	"allowPartialManifests": {single: true, lenient: "a value other than true or false is ignored; the manifest is not paged"},
	"_maximumFileSize":      {single: true, lenient: "a value the server cannot honour is ignored; files roll at the server's size"},
	"_minimumFileSize":      {single: true, lenient: "a value the server cannot honour is ignored"},
	"_format":               {single: true},
	"_pretty":               {single: true},
}

// Droppable reports whether lenient handling may drop a bad value of the
// parameter name (see paramRules).
func Droppable(name string) bool { return paramRules[name].lenient != "" }

func validate(req *Request, params []param, now time.Time, probs *Problems) {
	seen := map[string]int{}
	typeSet := map[string]bool{}
	elemSet := map[string]bool{}
	typeGiven := false
	for _, p := range params {
		seen[p.name]++
		if rule, ok := paramRules[p.name]; ok && rule.single && seen[p.name] > 1 {
			if seen[p.name] == 2 {
				probs.Refuse(fhir.CodeInvalid, p.name, "may be given only once")
			}
			continue
		}
		switch p.name {
		case "_outputFormat":
			switch strings.ToLower(strings.TrimSpace(p.value)) {
			case "application/fhir+ndjson", "application/ndjson", "ndjson":
				req.OutputFormat = NDJSON
			default:
				probs.Add(fhir.CodeNotSupported, p.name, fmt.Sprintf("%q is not supported; use application/fhir+ndjson, application/ndjson or ndjson", p.value))
			}
		case "_since", "_until":
			t, err := fhir.ParseInstant(p.value)
			if err != nil {
				probs.Add(fhir.CodeValue, p.name, err.Error())
				continue
			}
			if p.name == "_since" {
				if !now.IsZero() && t.After(now) {
					probs.Add(fhir.CodeValue, p.name, fmt.Sprintf("%q is in the future", p.value))
					continue
				}
				req.Since = &t
			} else {
				req.Until = &t
			}
		case "_type":
			typeGiven = true
			for _, t := range splitList(p.value) {
				if !fhir.IsResourceType(t) {
					probs.Add(fhir.CodeNotSupported, p.name, fmt.Sprintf("%q is not a FHIR R4 resource type", t))
					continue
				}
				if !typeSet[t] {
					typeSet[t] = true
					req.Types = append(req.Types, t)
				}
			}
		case "_elements":
			for _, e := range splitList(p.value) {
				typ, name, err := fhir.ParseElement(e)
				if err != nil {
					probs.Add(fhir.CodeValue, p.name, err.Error())
					continue
				}
				norm := name
				if typ != "" {
					norm = typ + "." + name
				}
				if !elemSet[norm] {
					elemSet[norm] = true
					req.Elements = append(req.Elements, norm)
				}
			}
		case "patient":
			if req.Level == LevelSystem {
				probs.Add(fhir.CodeNotSupported, p.name, "is not allowed at system level; use Patient/$export or Group/[id]/$export")
				continue
			}
			if p.kind != "Reference" {
				probs.Add(fhir.CodeNotSupported, p.name, "is accepted only in a POST Parameters body as valueReference")
				continue
			}
			id, ok := fhir.PatientID(p.value)
			if !ok {
				probs.Add(fhir.CodeValue, p.name, fmt.Sprintf("%q is not a reference to a Patient", p.value))
				continue
			}
			req.Patients = appendUnique(req.Patients, id)
		case "includeAssociatedData":
			for _, code := range splitList(p.value) {
				switch {
				case code == LatestProvenanceResources || code == RelevantProvenanceResources || strings.HasPrefix(code, "_"):
					req.IncludeAssociatedData = appendUnique(req.IncludeAssociatedData, code)
				default:
					probs.Add(fhir.CodeValue, p.name, fmt.Sprintf("%q is not a code of http://hl7.org/fhir/uv/bulkdata/ValueSet/include-associated-data", code))
				}
			}
		case "_typeFilter":
			for _, f := range splitTypeFilters(p.value) {
				if err := checkTypeFilter(f); err != nil {
					probs.Add(fhir.CodeValue, p.name, err.Error())
					continue
				}
				req.TypeFilters = appendUnique(req.TypeFilters, f)
			}
		case "_maximumFileSize", "_minimumFileSize":
			if seen[p.name] > 1 {
				probs.Add(fhir.CodeInvalid, p.name, "may be given only once")
				continue
			}
			n, err := strconv.ParseInt(strings.TrimSpace(p.value), 10, 64)
			if err != nil || n <= 0 {
				probs.Add(fhir.CodeValue, p.name, fmt.Sprintf("%q is not a positive integer number of bytes", p.value))
				continue
			}
			if p.name == "_maximumFileSize" {
				req.MaxFileSize = n
			} else {
				req.MinFileSize = n
			}
		case "organizeOutputBy":
			// Patient is the one organizing type with a compartment
			// definition (N-03); other types have no defined block.
			switch v := strings.TrimSpace(p.value); v {
			case "Patient":
				req.OrganizeOutputBy = v
			case "":
			default:
				probs.Add(fhir.CodeNotSupported, p.name, fmt.Sprintf("%q is not supported; output can be organized by Patient only", p.value))
			}
		case "allowPartialManifests":
			switch strings.ToLower(strings.TrimSpace(p.value)) {
			case "true":
				req.AllowPartialManifests = true
			case "false":
			default:
				probs.Add(fhir.CodeValue, p.name, fmt.Sprintf("%q is not a boolean (true or false)", p.value))
			}
		case "_format", "_pretty":
			// General FHIR parameters about the response format of this
			// request; the kick-off response has no body to format.
		default:
			probs.Add(fhir.CodeNotSupported, p.name, "is not a parameter of $export")
		}
	}
	if req.MinFileSize > 0 && req.MaxFileSize > 0 && req.MinFileSize > req.MaxFileSize {
		probs.Add(fhir.CodeValue, "_minimumFileSize", "must not be larger than _maximumFileSize")
		req.MinFileSize = 0
	}
	if req.Since != nil && req.Until != nil && !req.Until.After(*req.Since) {
		probs.Add(fhir.CodeValue, "_until", "must be later than _since")
		req.Until = nil
	}
	if typeGiven && len(req.Types) == 0 {
		probs.Refuse(fhir.CodeValue, "_type", "names no resource type this server can export; an empty _type would export every type")
	}
}

// checkTypeFilter validates one "Type?query" _typeFilter value.
func checkTypeFilter(f string) error {
	typ, query, ok := strings.Cut(f, "?")
	if !ok || typ == "" {
		return fmt.Errorf("%q: want ResourceType?search-parameters", f)
	}
	if !fhir.IsResourceType(typ) {
		return fmt.Errorf("%q: %q is not a FHIR R4 resource type", f, typ)
	}
	values, err := ParseQuery(query)
	if err != nil || len(values) == 0 {
		return fmt.Errorf("%q: not a search query (name=value pairs joined by '&')", f)
	}
	for _, v := range values {
		base, _, _ := strings.Cut(v.Name, ":")
		if bannedFilterParams[base] {
			return fmt.Errorf("%q: %s is not allowed in a _typeFilter", f, base)
		}
	}
	return nil
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}
