package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/boltstore"
	"github.com/bulkfhir/bulkfhir/shared/dirstore"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/retention"
)

// downloadSettings are serve's download flags (docs/downloads.md).
type downloadSettings struct {
	mode         string
	linkLifetime time.Duration
}

func (d *downloadSettings) flags(fs *flag.FlagSet) {
	fs.StringVar(&d.mode, "downloads", api.DownloadsSigned, "how files are downloaded: signed (links signed by this server, as presigned S3 links on AWS) or redirect (links to /bulkfiles/, each download authorized by the owner's bearer token)")
	fs.DurationVar(&d.linkLifetime, "link-lifetime", 12*time.Hour, "longest validity of one signed link (as the signing session caps presigned links on AWS); a status poll returns fresh ones")
}

// apply checks the flags and returns the file store the service links
// with, the deliverer of redirect mode (or nil), and whether the manifest
// needs the access token.
func (d *downloadSettings) apply(files *dirstore.Store, requireToken bool) (export.FileStore, api.FileDeliverer, bool, error) {
	mode, err := api.ParseDownloads(d.mode)
	if err != nil {
		return nil, nil, false, fmt.Errorf("serve: --downloads: %w", err)
	}
	if d.linkLifetime <= 0 {
		return nil, nil, false, fmt.Errorf("serve: --link-lifetime must be positive")
	}
	files.SetMaxLinkLifetime(d.linkLifetime)
	if mode == api.DownloadsRedirect {
		return api.RedirectLinks(files), files, true, nil
	}
	return files, nil, requireToken, nil
}

// expireJobs deletes the files and records of the jobs due at now: ended
// and past their Expires (retention.Due), never a live one, however old.
func expireJobs(ctx context.Context, jobs *boltstore.Store, files *dirstore.Store, now time.Time, log *slog.Logger) {
	ids, err := jobs.Expired(ctx, now)
	if err != nil {
		log.Warn("janitor", "err", err)
	}
	for _, id := range ids {
		if j, err := jobs.Get(ctx, id); err != nil || !retention.Due(j, now) {
			continue
		}
		if err := files.DeleteJob(ctx, id); err != nil {
			log.Warn("janitor: delete files", "job", id, "err", err)
			continue
		}
		if err := jobs.Delete(ctx, id); err != nil {
			log.Warn("janitor: delete job", "job", id, "err", err)
		}
	}
}
