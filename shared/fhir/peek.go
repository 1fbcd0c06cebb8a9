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
	res := gjson.GetManyBytes(resource, "resourceType", "id", "meta.lastUpdated")
	if res[0].Type != gjson.String || res[0].Str == "" {
		return h, false
	}
	h.ResourceType = res[0].Str
	if res[1].Type == gjson.String {
		h.ID = res[1].Str
	}
	if res[2].Type == gjson.String {
		h.LastUpdated = res[2].Str
	}
	return h, true
}
