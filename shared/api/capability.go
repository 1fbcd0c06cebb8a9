package api

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/searchparam"
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
// the token URL, not the list of types the source holds. A source that
// does not answer within a few seconds (an upstream that is down) leaves
// its types out rather than holding the answer: the operations are there
// all the same.
func (h *Handler) capabilityStatement(ctx context.Context, base string, full bool) ([]byte, error) {
	var types []string
	if full {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var err error
		if types, err = h.types.get(tctx, h.svc.Source()); err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			h.log.WarnContext(ctx, "the source's types are not listed: it does not answer", "err", err)
			types = nil
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
	if sp, ok := h.svc.Source().(searchParamSource); ok {
		for _, r := range resources {
			addSearchParams(r, sp.SearchParams(r["type"].(string)))
		}
	}
	rest := map[string]any{
		"mode":          "server",
		"documentation": "Bulk Data Access IG v2 export at system, Patient and Group level. Output is application/fhir+ndjson, one file per type and segment, rolled by size, or resource blocks per Patient with organizeOutputBy=Patient; allowPartialManifests=true pages the manifest and serves the files done so far while the export runs. Each resource's searchParam lists the search parameters its _typeFilter queries may use.",
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

// searchParamSource is a Source that evaluates _typeFilter itself and can
// list, per type, the search parameters a _typeFilter may use (C-05).
type searchParamSource interface {
	SearchParams(typ string) []searchparam.Param
}

// addSearchParams lists ps in a resource's searchParam, after any already
// there (the Group search interaction's, which gain their definition),
// without repeating a name.
func addSearchParams(r map[string]any, ps []searchparam.Param) {
	list, _ := r["searchParam"].([]map[string]any)
	have := map[string]map[string]any{}
	for _, p := range list {
		have[p["name"].(string)] = p
	}
	for _, p := range ps {
		if e := have[p.Code]; e != nil {
			e["definition"] = p.URL
			continue
		}
		list = append(list, map[string]any{"name": p.Code, "definition": p.URL, "type": p.Type})
	}
	if len(list) > 0 {
		r["searchParam"] = list
	}
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
