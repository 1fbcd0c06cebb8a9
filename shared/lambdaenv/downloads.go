package lambdaenv

import (
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/bulkfhir/bulkfhir/shared/s3store"
	"github.com/bulkfhir/bulkfhir/shared/settings"
)

// Downloads is how the API functions hand out files.
type Downloads struct {
	// Mode is settings.DownloadsPresigned or settings.DownloadsRedirect.
	Mode          string
	SignerRoleARN string
	Session       time.Duration
}

// Redirect reports whether the manifest links to the API's download
// route (apigw.DownloadLinks).
func (d Downloads) Redirect() bool { return d.Mode == settings.DownloadsRedirect }

// loadDownloads reads the download settings.
func loadDownloads(getenv func(string) string, problems *[]string) Downloads {
	var d Downloads
	switch v := strings.TrimSpace(getenv(settings.EnvDownloads)); v {
	case "", settings.DownloadsPresigned:
		d.Mode = settings.DownloadsPresigned
	case settings.DownloadsRedirect:
		d.Mode = v
	default:
		*problems = append(*problems, fmt.Sprintf("%s=%q: want %s or %s", settings.EnvDownloads, v, settings.DownloadsPresigned, settings.DownloadsRedirect))
	}
	d.SignerRoleARN = strings.TrimSpace(getenv(settings.EnvLinkSignerRoleARN))
	// A function's credentials are a role session: the signer's session
	// is role chaining, which STS caps at one hour.
	d.Session = s3store.ChainedMaxSession
	if v := strings.TrimSpace(getenv(settings.EnvLinkSession)); v != "" {
		s, err := time.ParseDuration(v)
		if err != nil || s < 15*time.Minute || s > s3store.ChainedMaxSession {
			*problems = append(*problems, fmt.Sprintf("%s=%q: want a duration from 15m to 1h (STS caps a session assumed from a function's role session at one hour)", settings.EnvLinkSession, v))
		} else {
			d.Session = s
		}
	}
	return d
}

// SignLinks makes the file store sign its links with download-signer
// sessions when a role is configured (the status function's).
func SignLinks(files *s3store.Store, cfg Config, awsCfg aws.Config) {
	d := cfg.Downloads
	if d.SignerRoleARN == "" {
		return
	}
	files.SetSigner(s3store.NewRoleSigner(sts.NewFromConfig(awsCfg), d.SignerRoleARN, s3store.SignerOptions{MaxSession: d.Session}))
}
