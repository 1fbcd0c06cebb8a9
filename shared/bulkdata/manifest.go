package bulkdata

// Manifest is the body of a completed status request (checklist M-01..M-11).
// error is always present, empty when there were no messages; deleted is
// present and empty because bulkfhir sources report no deletions yet.
type Manifest struct {
	TransactionTime     string         `json:"transactionTime"`
	Request             string         `json:"request"`
	RequiresAccessToken bool           `json:"requiresAccessToken"`
	Output              []ManifestFile `json:"output"`
	Deleted             []ManifestFile `json:"deleted"`
	Error               []ManifestFile `json:"error"`
}

// ManifestFile is one output, error or deleted entry.
type ManifestFile struct {
	Type  string `json:"type"`
	URL   string `json:"url"`
	Count *int64 `json:"count,omitempty"`
	// FileSize is the file's size in bytes (current build, B-04).
	FileSize *int64 `json:"fileSize,omitempty"`
}
