package api

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

const (
	bulkCapability = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
	opExport       = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
	opPatient      = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
	opGroup        = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
)

// capabilityStatement declares the three export operations (C-01..C-05) and
// lists the exportable types.
//
// Without a valid token when authentication is on, it holds only what
// discovery needs: the export operations and the security section with
// the token URL, not the list of types the source holds.
func (h *Handler) capabilityStatement(ctx context.Context, base string, full bool) ([]byte, error) {
	var types []string
	if full {
		var err error
		if types, err = h.svc.Source().Types(ctx); err != nil {
			return nil, err
		}
	}
	op := func(def string) []map[string]any {
		return []map[string]any{{"name": "export", "definition": def}}
	}
	resources := []map[string]any{}
	seen := map[string]bool{}
	add := func(t string) map[string]any {
		seen[t] = true
		r := map[string]any{"type": t}
		resources = append(resources, r)
		return r
	}
	patient := add("Patient")
	patient["operation"] = op(opPatient)
	group := add("Group")
	group["operation"] = op(opGroup)
	if h.groups != nil {
		group["interaction"] = []map[string]any{{"code": "read"}, {"code": "search-type"}}
		group["searchParam"] = []map[string]any{
			{"name": "identifier", "type": "token"},
			{"name": "name", "type": "string"},
		}
	}
	for _, t := range types {
		if !seen[t] {
			add(t)
		}
	}
	rest := map[string]any{
		"mode":          "server",
		"documentation": "Bulk Data Access IG v2 export at system, Patient and Group level. Output is application/fhir+ndjson, one file per type and segment, rolled by size.",
		"resource":      resources,
		"operation":     op(opExport),
	}
	if !full {
		rest["documentation"] = "Authenticate with SMART Backend Services (see security) to read the full CapabilityStatement."
	}
	if h.authOn() {
		rest["security"] = h.security(base)
	}
	cs := map[string]any{
		"resourceType":   "CapabilityStatement",
		"status":         "active",
		"date":           h.started.Format(time.RFC3339),
		"publisher":      "bulkfhir",
		"kind":           "instance",
		"instantiates":   []string{bulkCapability},
		"software":       map[string]any{"name": "bulkfhir", "version": h.cfg.Version},
		"implementation": map[string]any{"description": "bulkfhir FHIR Bulk Data export server", "url": base},
		"fhirVersion":    "4.0.1",
		"format":         []string{"json"},
		"rest":           []map[string]any{rest},
	}
	return json.Marshal(cs)
}

func (h *Handler) metadata(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET")
		return
	}
	full := true
	if h.authOn() {
		_, err := h.cfg.Auth.Authenticate(r)
		full = err == nil
	}
	body, err := h.capabilityStatement(r.Context(), h.baseURL(r), full)
	if err != nil {
		h.internalError(w, r, "metadata", err)
		return
	}
	writeJSON(w, http.StatusOK, "application/fhir+json", body)
}

// searchsetBundle wraps raw resources in a searchset Bundle.
func searchsetBundle(base, t string, resources [][]byte) []byte {
	entries := make([]map[string]any, 0, len(resources))
	for _, r := range resources {
		id, _ := fhir.Peek(r)
		entries = append(entries, map[string]any{
			"fullUrl":  base + "/" + t + "/" + id.ID,
			"resource": json.RawMessage(r),
			"search":   map[string]any{"mode": "match"},
		})
	}
	b, _ := json.Marshal(map[string]any{
		"resourceType": "Bundle",
		"type":         "searchset",
		"total":        len(resources),
		"entry":        entries,
	})
	return b
}

// security is rest.security: SMART on FHIR with the oauth-uris extension
// naming the token endpoint, when there is one (the STU1 discovery that
// BDT still checks: "Includes the token endpoint in the CapabilityStatement").
func (h *Handler) security(base string) map[string]any {
	sec := map[string]any{
		"cors": false,
		"service": []map[string]any{{
			"coding": []map[string]any{{
				"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
				"code":   "SMART-on-FHIR",
			}},
			"text": "OAuth2 using SMART Backend Services (client_credentials, private_key_jwt)",
		}},
	}
	if u := h.tokenURL(base); u != "" {
		sec["extension"] = []map[string]any{{
			"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
			"extension": []map[string]any{{
				"url":      "token",
				"valueUri": u,
			}},
		}}
	}
	return sec
}
