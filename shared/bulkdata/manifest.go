package bulkdata

// Manifest is the body of a completed status request (checklist M-01..M-11).
// error is always present, empty when there were no messages; deleted is
// present and empty because bulkfhir sources report no deletions yet.
type Manifest struct {
	TransactionTime     string `json:"transactionTime"`
	Request             string `json:"request"`
	RequiresAccessToken bool   `json:"requiresAccessToken"`
	// OutputOrganizedBy is the honoured organizeOutputBy (STU3, M-12).
	OutputOrganizedBy string         `json:"outputOrganizedBy,omitempty"`
	Output            []ManifestFile `json:"output"`
	Deleted           []ManifestFile `json:"deleted"`
	Error             []ManifestFile `json:"error"`
	// Link chains the pages of a paged or partial manifest (STU3, N-04):
	// at most one {relation: "next", url}.
	Link []ManifestLink `json:"link,omitempty"`
}

// ManifestLink is one entry of a manifest's link array.
type ManifestLink struct {
	Relation string `json:"relation"`
	URL      string `json:"url"`
}

// Next is the URL of the next manifest page, or "" when there is none.
func (m *Manifest) Next() string {
	for _, l := range m.Link {
		if l.Relation == "next" {
			return l.URL
		}
	}
	return ""
}

// ManifestFile is one output, error or deleted entry.
type ManifestFile struct {
	// Type is absent on the output items of an export organized by a
	// resource type (organizeOutputBy, M-12).
	Type string `json:"type,omitempty"`
	URL  string `json:"url"`
	// ContinuesInFile is the URL of the file a split resource block goes
	// on in (organizeOutputBy, N-03).
	ContinuesInFile string `json:"continuesInFile,omitempty"`
	Count           *int64 `json:"count,omitempty"`
	// FileSize is the file's size in bytes (current build, B-04).
	FileSize *int64 `json:"fileSize,omitempty"`
}
