package lambdaenv

import (
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/s3store"
)

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
	// EnvLinkSession is the signer session duration asked for: the role's
	// MaxSessionDuration (default and at most 12h).
	EnvLinkSession = "BULKFHIR_LINK_SESSION"
)

// Downloads is how the API functions hand out files.
type Downloads struct {
	// Mode is api.DownloadsSigned (presigned) or api.DownloadsRedirect.
	Mode          string
	SignerRoleARN string
	Session       time.Duration
}

// loadDownloads reads the download settings.
func loadDownloads(getenv func(string) string, problems *[]string) Downloads {
	var d Downloads
	var err error
	if d.Mode, err = api.ParseDownloads(getenv(EnvDownloads)); err != nil {
		*problems = append(*problems, fmt.Sprintf("%s: %v", EnvDownloads, err))
	}
	d.SignerRoleARN = strings.TrimSpace(getenv(EnvLinkSignerRoleARN))
	d.Session = s3store.DefaultMaxSession
	if v := strings.TrimSpace(getenv(EnvLinkSession)); v != "" {
		s, err := time.ParseDuration(v)
		if err != nil || s < 15*time.Minute || s > s3store.DefaultMaxSession {
			*problems = append(*problems, fmt.Sprintf("%s=%q: want a duration from 15m to 12h (the role's MaxSessionDuration)", EnvLinkSession, v))
		} else {
			d.Session = s
		}
	}
	return d
}

// signLinks makes the file store sign its links with download-signer
// sessions when a role is configured.
func signLinks(files *s3store.Store, d Downloads, awsCfg aws.Config) {
	if d.SignerRoleARN == "" {
		return
	}
	files.SetSigner(s3store.NewRoleSigner(sts.NewFromConfig(awsCfg), d.SignerRoleARN, s3store.SignerOptions{MaxSession: d.Session}))
}
