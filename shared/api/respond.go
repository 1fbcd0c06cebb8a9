package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

func writeJSON(w http.ResponseWriter, status int, contentType string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(body)
}

func writeOutcome(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, "application/fhir+json", fhir.Outcome(fhir.SeverityError, code, msg).JSON())
}

func writeError(w http.ResponseWriter, e *bulkdata.Error) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	writeJSON(w, e.Status, "application/fhir+json", e.Outcome.JSON())
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeOutcome(w, http.StatusMethodNotAllowed, fhir.CodeNotSupported, "method not allowed here; allowed: "+allow)
}

// marshalManifest encodes without HTML escaping, so '&' in links stays '&'.
func marshalManifest(m *bulkdata.Manifest) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
