package bulkdata

import (
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Preferences are the Prefer header tokens a kick-off understands (RFC 7240).
type Preferences struct {
	RespondAsync         bool
	Lenient              bool
	SeparateExportStatus bool
	// Wait is RFC 7240's wait preference in seconds (0 when absent or not
	// a number): on a status request, how long the client lets the server
	// hold the answer until the export changes (docs/behaviour.md).
	Wait int
}

// ParsePrefer reads every Prefer header as one comma-separated list of
// preferences; parameters after ';' are ignored, as are unknown preferences.
func ParsePrefer(h http.Header) Preferences {
	var p Preferences
	for _, line := range h.Values("Prefer") {
		for _, pref := range strings.Split(line, ",") {
			pref, _, _ = strings.Cut(pref, ";")
			name, value, _ := strings.Cut(strings.TrimSpace(pref), "=")
			name = strings.ToLower(strings.TrimSpace(name))
			value = strings.ToLower(strings.Trim(strings.TrimSpace(value), `"`))
			switch {
			case name == "respond-async":
				p.RespondAsync = true
			case name == "handling" && value == "lenient":
				p.Lenient = true
			case name == "handling" && value == "strict":
				p.Lenient = false
			case name == "separate-export-status":
				p.SeparateExportStatus = true
			case name == "wait":
				if n, err := strconv.Atoi(value); err == nil && n > 0 {
					p.Wait = n
				}
			}
		}
	}
	return p
}

// AcceptsFHIRJSON reports whether an Accept header admits
// application/fhir+json: by name, or through */* or application/*.
// Media-type parameters such as fhirVersion are allowed; q=0 excludes a
// type. application/json alone does not: the IG names
// application/fhir+json as the only supported kick-off Accept value.
func AcceptsFHIRJSON(values []string) bool {
	return acceptsAny(values, "application/fhir+json", "*/*", "application/*")
}

// PrefersPlainJSON reports whether an Accept header asks for
// application/json and does not admit application/fhir+json, so FHIR JSON
// responses are best labelled application/json (the same content, as
// FHIR's content negotiation allows).
func PrefersPlainJSON(values []string) bool {
	return acceptsAny(values, "application/json") && !AcceptsFHIRJSON(values)
}

func acceptsAny(values []string, types ...string) bool {
	for _, line := range values {
		for _, part := range strings.Split(line, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			if q, ok := params["q"]; ok && (q == "0" || strings.Trim(q, "0.") == "") {
				continue
			}
			if slices.Contains(types, mt) {
				return true
			}
		}
	}
	return false
}

// CheckKickoffHeaders applies checklist K-04/K-05: a kick-off must ask for
// FHIR JSON and for asynchronous processing. bulkfhir rejects a request
// without them (both choices are allowed by the IG; rejecting matches the
// reference test suite and tells the client what to send).
func CheckKickoffHeaders(h http.Header) (Preferences, *Error) {
	accept := h.Values("Accept")
	if len(accept) == 0 {
		return Preferences{}, NewError(http.StatusBadRequest, "required",
			"Accept header is required: send Accept: application/fhir+json")
	}
	if !AcceptsFHIRJSON(accept) {
		return Preferences{}, NewError(http.StatusNotAcceptable, "not-supported",
			"Accept: send Accept: application/fhir+json (the only format a kick-off supports; */* also works), got "+strings.Join(accept, ", "))
	}
	p := ParsePrefer(h)
	if !p.RespondAsync {
		return p, NewError(http.StatusBadRequest, "required",
			"Prefer: respond-async is required: $export runs asynchronously (send Prefer: respond-async)")
	}
	return p, nil
}
