package fhir

import "github.com/tidwall/gjson"

// Head is what export filters need to know about a resource without decoding it.
type Head struct {
	ResourceType string
	ID           string
	LastUpdated  string // meta.lastUpdated as written, "" when absent
}

// Peek reads resourceType, id and meta.lastUpdated from raw resource JSON. ok
// is false when the bytes are not a JSON object with a string resourceType.
func Peek(resource []byte) (h Head, ok bool) {
	if !gjson.ValidBytes(resource) {
		return h, false
	}
	// One Get per field: each stops at its key, and FHIR JSON puts these
	// first (GetMany would rescan and allocate more).
	rt := gjson.GetBytes(resource, "resourceType")
	if rt.Type != gjson.String || rt.Str == "" {
		return h, false
	}
	h.ResourceType = rt.Str
	if id := gjson.GetBytes(resource, "id"); id.Type == gjson.String {
		h.ID = id.Str
	}
	if lu := gjson.GetBytes(resource, "meta.lastUpdated"); lu.Type == gjson.String {
		h.LastUpdated = lu.Str
	}
	return h, true
}
