package settings

// Download settings of the API functions (docs/downloads.md).
const (
	// EnvDownloads is the download mode: "presigned" (the default:
	// presigned S3 links in the manifest) or "redirect" (links to the
	// API's /bulkfiles/ route, authorized by the owner's token, answered
	// with a redirect to a presigned link valid for minutes).
	EnvDownloads = "BULKFHIR_DOWNLOADS"
	// EnvLinkSignerRoleARN is the download-signer role the status function
	// assumes to sign links (read-only on the export prefix): links then
	// live as long as they say. Unset: the function's own credentials sign.
	EnvLinkSignerRoleARN = "BULKFHIR_LINK_SIGNER_ROLE_ARN"
	// EnvLinkSession is the signer session duration asked for (default
	// and at most 1h: STS caps role chaining, a function's role session
	// assuming another role, at one hour).
	EnvLinkSession = "BULKFHIR_LINK_SESSION"
)

// Values of EnvDownloads.
const (
	DownloadsPresigned = "presigned"
	DownloadsRedirect  = "redirect"
)
