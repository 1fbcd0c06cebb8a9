package lambdaenv

// Settings of the STU3 export parameters (issue 14), kept apart from the
// long lists so they move with the configuration as one piece.
const (
	// EnvManifestPageSize is how many file items one page of a paged
	// manifest (allowPartialManifests) holds at most.
	EnvManifestPageSize = "BULKFHIR_MANIFEST_PAGE_SIZE"
)
