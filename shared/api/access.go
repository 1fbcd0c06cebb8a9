package api

import (
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// authOn reports whether requests need credentials.
func (h *Handler) authOn() bool {
	_, anon := h.cfg.Auth.(Anonymous)
	return !anon
}

// tokenURL is the token endpoint advertised in the CapabilityStatement,
// or "" for none.
func (h *Handler) tokenURL(base string) string {
	if strings.HasPrefix(h.cfg.TokenURL, "/") {
		return base + h.cfg.TokenURL
	}
	return h.cfg.TokenURL
}

// authorizeTypes enforces the token's scopes at kick-off (A-12, G-03): an
// explicit _type (or _typeFilter, or associated Provenance) outside them is
// refused with 403; without _type the export is limited to the granted
// types (at Patient and Group level, those of the Patient compartment).
func authorizeTypes(c Caller, req *bulkdata.Request) *bulkdata.Error {
	if c.Scopes == nil || c.Scopes.All() {
		return nil
	}
	var denied []string
	deny := func(t string) {
		if !c.Allows(t) && !slices.Contains(denied, t) {
			denied = append(denied, t)
		}
	}
	for _, t := range req.Types {
		deny(t)
	}
	for _, f := range req.TypeFilters {
		t, _, _ := strings.Cut(f, "?")
		deny(t)
	}
	if slices.Contains(req.IncludeAssociatedData, bulkdata.RelevantProvenanceResources) ||
		slices.Contains(req.IncludeAssociatedData, bulkdata.LatestProvenanceResources) {
		deny("Provenance")
	}
	if len(denied) > 0 {
		return bulkdata.NewError(http.StatusForbidden, fhir.CodeForbidden,
			fmt.Sprintf("the access token's scopes (%s) do not cover %s", c.Scopes, strings.Join(denied, ", ")))
	}
	if len(req.Types) > 0 {
		return nil
	}
	for _, t := range c.Scopes.Types() {
		if req.Level == bulkdata.LevelSystem || fhir.InPatientCompartment(t) {
			req.Types = append(req.Types, t)
		}
	}
	if len(req.Types) == 0 {
		return bulkdata.NewError(http.StatusForbidden, fhir.CodeForbidden,
			fmt.Sprintf("the access token's scopes (%s) cover no type exportable at %s level", c.Scopes, req.Level))
	}
	return nil
}

// coversJob reports whether the caller's scopes cover everything the job
// exports: a fresh token of the same client with narrower scopes
// cannot read a wider export.
func coversJob(c Caller, job *export.Job) bool {
	if c.Scopes == nil || c.Scopes.All() {
		return true
	}
	if len(job.Request.Types) == 0 {
		return false
	}
	for _, t := range job.Request.Types {
		if !c.Allows(t) {
			return false
		}
	}
	return true
}

// authorizeFile checks a download when authentication is on: the caller
// must own the job the file belongs to (others get 404, as for status) and
// its scopes must cover the file's type.
func (h *Handler) authorizeFile(w http.ResponseWriter, r *http.Request, key string) bool {
	if !h.authOn() {
		return true
	}
	return h.checkFile(w, r, key)
}

// checkFile authenticates the caller of a download (an anonymous
// server's one client included) and checks it owns the job (else 404, as
// for status) and its scopes cover the file's type (else 403).
func (h *Handler) checkFile(w http.ResponseWriter, r *http.Request, key string) bool {
	caller, ok := h.authenticate(w, r)
	if !ok {
		return false
	}
	auditOf(w).client = caller.Client
	jobID, _, _ := strings.Cut(key, "/")
	if err := h.svc.CheckOwner(r.Context(), caller.Client, jobID); err != nil {
		h.serviceError(w, r, "download", err)
		return false
	}
	// Files are named Type.seq.ndjson or errors.….ndjson.
	typ, _, _ := strings.Cut(path.Base(key), ".")
	if typ != "errors" && !caller.Allows(typ) {
		writeOutcome(w, http.StatusForbidden, fhir.CodeForbidden, "the access token's scopes do not cover "+typ)
		return false
	}
	return true
}
