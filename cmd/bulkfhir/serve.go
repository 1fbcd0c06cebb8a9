package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/boltstore"
	"github.com/bulkfhir/bulkfhir/shared/dirstore"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/localrunner"
	"github.com/bulkfhir/bulkfhir/shared/ndjsonsource"
)

type serveConfig struct {
	addr, data, state, baseURL, tokens string
	retention                          time.Duration
	maxFileBytes                       int64
	chunkBudget                        time.Duration
	maxJobs, unitWorkers, maxLive      int
}

func serve(ctx context.Context, args []string, log *slog.Logger) error {
	var c serveConfig
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "listen address")
	fs.StringVar(&c.data, "data", "", "directory of NDJSON files to export (required)")
	fs.StringVar(&c.state, "state", "", "directory for job state and exported files (required)")
	fs.StringVar(&c.baseURL, "base-url", "", "public FHIR base URL (default: from each request, http://HOST/fhir)")
	fs.DurationVar(&c.retention, "retention", export.DefaultRetention, "how long files stay after an export completes")
	fs.StringVar(&c.tokens, "tokens", "", "file of 'TOKEN CLIENT_ID' lines; when set, requests need a bearer token")
	fs.Int64Var(&c.maxFileBytes, "max-file-bytes", export.DefaultMaxFileBytes, "roll output files at this size")
	fs.DurationVar(&c.chunkBudget, "chunk-budget", 20*time.Second, "checkpoint each unit at least this often")
	fs.IntVar(&c.maxJobs, "max-jobs", 4, "exports run at once (others queue)")
	fs.IntVar(&c.unitWorkers, "unit-workers", 4, "units of one export run at once")
	fs.IntVar(&c.maxLive, "max-live-jobs", export.DefaultMaxLiveJobsPerOwner, "queued or running exports per client before 429")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.data == "" || c.state == "" {
		return errors.New("serve: --data and --state are required")
	}
	if c.retention <= 0 {
		return errors.New("serve: --retention must be positive")
	}

	source, err := ndjsonsource.New(c.data, 0)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.state, 0o700); err != nil {
		return fmt.Errorf("serve: state dir: %w", err)
	}
	jobs, err := boltstore.Open(filepath.Join(c.state, "jobs.db"))
	if err != nil {
		return err
	}
	defer jobs.Close()
	files, err := dirstore.Open(filepath.Join(c.state, "files"), filepath.Join(c.state, "link-secret"))
	if err != nil {
		return err
	}
	var auth api.Authenticator = api.Anonymous{}
	if c.tokens != "" {
		if auth, err = api.LoadTokens(c.tokens); err != nil {
			return err
		}
	}
	cfg := export.Config{
		Retention: c.retention, MaxFileBytes: c.maxFileBytes, ChunkBudget: c.chunkBudget,
		MaxLiveJobsPerOwner: c.maxLive,
	}
	steps := export.NewSteps(jobs, files, source, cfg, log)
	runner := localrunner.New(steps, jobs, localrunner.Options{MaxJobs: c.maxJobs, UnitWorkers: c.unitWorkers}, log)
	svc := export.NewService(jobs, files, runner, source, cfg, log)
	handler := api.New(svc, api.Config{BaseURL: c.baseURL, Auth: auth, Files: files, Version: version, Log: log})

	// Index the source before listening so the first export does not wait.
	if counts, err := source.Counts(ctx); err != nil {
		return err
	} else {
		total := int64(0)
		for _, n := range counts {
			total += n
		}
		log.Info("source indexed", "dir", c.data, "types", len(counts), "resources", total)
	}

	// Jobs that were live when the server stopped resume from their cursors.
	live, err := jobs.Live(ctx)
	if err != nil {
		return err
	}
	for _, id := range live {
		log.Info("resuming job", "job", id)
		if err := runner.Start(ctx, id); err != nil {
			return err
		}
	}
	go janitor(ctx, jobs, files, log)

	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	log.Info("listening", "addr", ln.Addr().String(), "base", "/fhir")
	// STATE/addr holds the bound address (useful with --addr 127.0.0.1:0).
	addrFile := filepath.Join(c.state, "addr")
	if err := writeFileAtomic(addrFile, []byte(ln.Addr().String())); err != nil {
		return err
	}
	defer os.Remove(addrFile)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	if err := runner.Shutdown(sctx); err != nil {
		log.Warn("runner shutdown", "err", err)
	}
	return nil
}

// janitor removes expired jobs and their files every minute (the embedded
// counterpart of S3 lifecycle rules and DynamoDB TTL).
func janitor(ctx context.Context, jobs *boltstore.Store, files *dirstore.Store, log *slog.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		ids, err := jobs.Expired(ctx, time.Now())
		if err != nil {
			log.Warn("janitor", "err", err)
		}
		for _, id := range ids {
			if err := files.DeleteJob(ctx, id); err != nil {
				log.Warn("janitor: delete files", "job", id, "err", err)
				continue
			}
			if err := jobs.Delete(ctx, id); err != nil {
				log.Warn("janitor: delete job", "job", id, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}
