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
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/boltstore"
	"github.com/bulkfhir/bulkfhir/shared/dirstore"
	"github.com/bulkfhir/bulkfhir/shared/diskspace"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhirsource"
	"github.com/bulkfhir/bulkfhir/shared/httplimit"
	"github.com/bulkfhir/bulkfhir/shared/joblog"
	"github.com/bulkfhir/bulkfhir/shared/localrunner"
	"github.com/bulkfhir/bulkfhir/shared/metrics"
	"github.com/bulkfhir/bulkfhir/shared/ndjsonsource"
	"github.com/bulkfhir/bulkfhir/shared/prommetrics"
	"github.com/bulkfhir/bulkfhir/shared/stepmetrics"
)

type serveConfig struct {
	addr, data, state, baseURL, tokens string
	clients                            string
	allowAnonymous                     bool
	upstream                           fhirsource.Settings
	sourceKeyFile                      string
	sourcePageSize                     int
	sourceFollowOtherOrigins           bool
	retention                          time.Duration
	maxFileBytes                       int64
	chunkBudget                        time.Duration
	statusWait                         time.Duration
	maxJobs, unitWorkers, maxLive      int
	manifestPageSize                   int
	limits                             httplimit.Limits
	repair                             bool
	reserveBytes, quotaBytes           int64
	downloads                          downloadSettings
}

func serve(ctx context.Context, args []string, log *slog.Logger) error {
	// Every line written during a job's step carries its "job" field.
	log = slog.New(joblog.NewHandler(log.Handler()))
	var c serveConfig
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "listen address")
	fs.StringVar(&c.data, "data", "", "directory of NDJSON files to export (this or --source-url)")
	fs.StringVar(&c.upstream.URL, "source-url", "", "base URL of a FHIR R4 server to export from (this or --data)")
	// The default is read after parsing, so -h never prints the secret.
	fs.StringVar(&c.upstream.Token, "source-token", "", "static bearer token for the upstream (default $BULKFHIR_SOURCE_TOKEN)")
	fs.StringVar(&c.upstream.ClientID, "source-client-id", "", "SMART Backend Services client id for the upstream")
	fs.StringVar(&c.sourceKeyFile, "source-key", "", "PEM private key file (RS384 or ES384) for SMART Backend Services (default: PEM in $BULKFHIR_SOURCE_KEY)")
	fs.StringVar(&c.upstream.TokenURL, "source-token-url", "", "the upstream's token endpoint for SMART Backend Services")
	fs.StringVar(&c.upstream.Scope, "source-scope", "", "scope to request (default system/*.read)")
	fs.StringVar(&c.upstream.KeyID, "source-key-id", "", "kid of the signing key in the client's JWK Set")
	fs.StringVar(&c.upstream.SigV4Region, "source-sigv4-region", "", "sign upstream requests with AWS SigV4 for this region (AWS HealthLake)")
	fs.IntVar(&c.sourcePageSize, "source-page-size", 0, "_count of upstream searches (default 500)")
	fs.BoolVar(&c.sourceFollowOtherOrigins, "source-follow-other-origins", false, "follow upstream next links to other origins, without credentials (default: such a link ends its search with an error)")
	fs.StringVar(&c.state, "state", "", "directory for job state and exported files (required)")
	fs.StringVar(&c.baseURL, "base-url", "", "public FHIR base URL (default: from each request, http://HOST/fhir)")
	fs.DurationVar(&c.retention, "retention", export.DefaultRetention, "how long files stay after an export completes")
	fs.StringVar(&c.tokens, "tokens", "", "file of 'TOKEN CLIENT_ID' lines; when set, requests need a bearer token")
	fs.StringVar(&c.clients, "clients", "", `SMART Backend Services clients file {"clients":[{"clientId","jwks"|"jwksUrl","scope"}]}`)
	fs.BoolVar(&c.allowAnonymous, "allow-anonymous", false, "serve without authorization, every caller one anonymous client (development only)")
	fs.Int64Var(&c.maxFileBytes, "max-file-bytes", export.DefaultMaxFileBytes, "roll output files at this size")
	fs.DurationVar(&c.chunkBudget, "chunk-budget", 20*time.Second, "checkpoint each unit at least this often")
	fs.IntVar(&c.maxJobs, "max-running-jobs", 4, "exports run at once; later kick-offs wait as accepted, in kick-off order")
	fs.IntVar(&c.maxJobs, "max-jobs", 4, "the former name of --max-running-jobs")
	fs.IntVar(&c.unitWorkers, "unit-workers", 4, "units of one export run at once")
	fs.DurationVar(&c.statusWait, "max-status-wait", 10*time.Second, "longest a status request with Prefer: wait=N is held until its export completes or lists new files (0: answer at once)")
	fs.IntVar(&c.maxLive, "max-live-jobs", export.DefaultMaxLiveJobsPerOwner, "queued or running exports per client before 429")
	fs.IntVar(&c.manifestPageSize, "manifest-page-size", export.DefaultManifestPageSize, "file items per manifest page for exports with allowPartialManifests=true")
	fs.Int64Var(&c.reserveBytes, "reserve-bytes", 64<<20, "refuse new exports (503) while less than this is free in --state; writes stop at half of it, so failures and cancels can always be recorded")
	fs.Int64Var(&c.quotaBytes, "quota-bytes", 0, "export bytes one client may have stored before new kick-offs get 429 (0: no quota)")
	fs.BoolVar(&c.repair, "repair", false, "if STATE/jobs.db is damaged, move it aside and keep the job records that can still be read, then serve")
	fs.DurationVar(&c.limits.ReadTimeout, "read-timeout", httplimit.DefaultReadTimeout, "longest time to read a request, body included")
	fs.DurationVar(&c.limits.WriteTimeout, "write-timeout", httplimit.DefaultWriteTimeout, "longest time to write an API response (downloads: see --download-idle-timeout)")
	fs.DurationVar(&c.limits.DownloadIdle, "download-idle-timeout", httplimit.DefaultDownloadIdle, "a download fails when the client takes no bytes for this long")
	fs.DurationVar(&c.limits.IdleTimeout, "idle-timeout", httplimit.DefaultIdleTimeout, "close keep-alive connections idle this long")
	fs.IntVar(&c.limits.MaxHeaderBytes, "max-header-bytes", httplimit.DefaultMaxHeaderBytes, "largest request line and headers")
	fs.IntVar(&c.limits.MaxConns, "max-connections", httplimit.DefaultMaxConns, "connections served at once (more wait in the listen backlog)")
	c.downloads.flags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if c.upstream.Token == "" {
		c.upstream.Token = os.Getenv("BULKFHIR_SOURCE_TOKEN")
	}
	if c.state == "" {
		return errors.New("serve: --state is required")
	}
	if (c.data == "") == (c.upstream.URL == "") {
		return errors.New("serve: set exactly one source: --data DIR (NDJSON files) or --source-url URL (a FHIR server)")
	}
	if c.retention <= 0 {
		return errors.New("serve: --retention must be positive")
	}
	waitSet := false
	fs.Visit(func(f *flag.Flag) { waitSet = waitSet || f.Name == "max-status-wait" })
	if !waitSet && c.limits.WriteTimeout > 0 && c.statusWait >= c.limits.WriteTimeout {
		c.statusWait = c.limits.WriteTimeout / 2 // a held poll must be answered within its write timeout
	}
	if c.statusWait < 0 || (c.limits.WriteTimeout > 0 && c.statusWait >= c.limits.WriteTimeout) {
		return fmt.Errorf("serve: --max-status-wait %s must be between 0 and --write-timeout (%s)", c.statusWait, c.limits.WriteTimeout)
	}

	source, err := c.source(ctx, log)
	if err != nil {
		return err
	}
	// BULKFHIR_CPUPROFILE=FILE profiles the server until it stops.
	stopProfile, err := cpuProfile("serve")
	if err != nil {
		return err
	}
	defer stopProfile()
	if err := os.MkdirAll(c.state, 0o700); err != nil {
		return fmt.Errorf("serve: state dir: %w", err)
	}
	dbPath := filepath.Join(c.state, "jobs.db")
	if c.repair {
		rep, err := boltstore.Repair(dbPath)
		if err != nil {
			return fmt.Errorf("serve: --repair: %w", err)
		}
		if rep.MovedTo != "" {
			log.Warn("job store repaired", "damaged", rep.MovedTo, "kept", rep.Kept, "lost", rep.Lost)
		}
	}
	jobs, err := boltstore.Open(dbPath)
	if err != nil {
		return err
	}
	defer jobs.Close()
	files, err := dirstore.Open(filepath.Join(c.state, "files"), filepath.Join(c.state, "link-secret"))
	if err != nil {
		return err
	}
	if err := cleanUpState(ctx, jobs, files, log); err != nil {
		return err
	}
	files.SetMinFree(c.reserveBytes / 2)
	authz, err := c.authorization(ctx, log)
	if err != nil {
		return err
	}
	links, deliver, requireToken, err := c.downloads.apply(files, authz.requireToken)
	if err != nil {
		return err
	}
	cfg := export.Config{
		Retention: c.retention, MaxFileBytes: c.maxFileBytes, ChunkBudget: c.chunkBudget,
		MaxLiveJobsPerOwner: c.maxLive, RequiresAccessToken: requireToken,
		ManifestPageSize: c.manifestPageSize,
	}
	// The same figures the Lambda functions write as EMF, on /metrics.
	rec := prommetrics.New()
	steps := stepmetrics.New(export.NewSteps(jobs, files, source, cfg, log), jobs, source, rec)
	if c.maxJobs <= 0 {
		return errors.New("serve: --max-running-jobs must be at least 1")
	}
	// svc is set below; the runner calls back into it when a job ends, to
	// start the next queued one.
	var svc *export.Service
	runner := localrunner.New(steps, jobs, localrunner.Options{MaxJobs: c.maxJobs, UnitWorkers: c.unitWorkers, OnDone: func(id string) {
		if _, err := svc.Dispatch(ctx); err != nil {
			log.Warn("dispatch after a job ended", "job", id, "err", err)
		}
	}}, log)
	svc = export.NewService(jobs, links, runner, source, cfg, log)
	svc.SetQueue(jobs, c.maxJobs)
	svc.SetObserver(stepmetrics.Observer{Rec: rec})
	svc.SetAdmission(&diskspace.Guard{Dir: c.state, Reserve: c.reserveBytes, Quota: c.quotaBytes, Usage: func(ctx context.Context, owner string) (int64, error) {
		return storedBytes(ctx, jobs, files, owner)
	}})
	handler := api.New(svc, api.Config{BaseURL: c.baseURL, Auth: authz.auth, AuthServer: authz.server, TokenURL: authz.tokenURL, Files: files, Deliver: deliver, Version: version, StatusWait: c.statusWait, Log: log})

	if err := warmUp(ctx, source, log); err != nil {
		return err
	}

	// Jobs that were live when the server stopped resume from their cursors.
	live, err := jobs.Live(ctx)
	if err != nil {
		return err
	}
	for _, id := range live {
		if j, err := jobs.Get(ctx, id); err == nil {
			if queued, err := jobs.Queued(ctx, j); err == nil && queued {
				continue // still waits its turn: dispatched below
			}
		}
		log.Info("resuming job", "job", id)
		if err := runner.Start(ctx, id); err != nil {
			return err
		}
	}
	go janitor(ctx, jobs, files, log)
	go sweeper(ctx, svc, rec, log)

	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	ln = c.limits.Listener(ln)
	// GET /metrics: aggregate figures only (no job ids, no client ids).
	// Everything else goes to the API handler as it came (no ServeMux:
	// its path cleaning would redirect requests the API refuses).
	metricsHandler := rec.Handler()
	withMetrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" && r.Method == http.MethodGet {
			metricsHandler.ServeHTTP(w, r)
			return
		}
		handler.ServeHTTP(w, r)
	})
	srv := c.limits.Server(withMetrics, func(r *http.Request) bool { return strings.Contains(r.URL.Path, api.LinkPrefix) })
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

// cleanUpState removes what a crash leaves behind, at start-up (this
// process holds the job store's lock, so no other server writes here):
// temporary files of writes that never committed, and files of jobs the
// store does not know (a crash between removing a job and its files). Job
// records that cannot be decoded are reported and left out.
func cleanUpState(ctx context.Context, jobs *boltstore.Store, files *dirstore.Store, log *slog.Logger) error {
	n, err := files.RemoveTemp()
	if err != nil {
		return fmt.Errorf("serve: remove temporary files: %w", err)
	}
	if n > 0 {
		log.Info("removed temporary files of an earlier run", "files", n)
	}
	if err := sweepOrphans(ctx, jobs, files, log); err != nil {
		return err
	}
	for _, id := range jobs.Skipped() {
		log.Warn("job store: a job record cannot be read and is skipped", "job", id)
	}
	return nil
}

// storedBytes is the size of the export files a client has stored.
func storedBytes(ctx context.Context, jobs *boltstore.Store, files *dirstore.Store, owner string) (int64, error) {
	ids, err := files.JobIDs()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, id := range ids {
		if j, err := jobs.Get(ctx, id); err != nil || j.Owner != owner {
			continue
		}
		n, err := files.JobBytes(id)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// sweepOrphans deletes the files of jobs the store does not know.
func sweepOrphans(ctx context.Context, jobs *boltstore.Store, files *dirstore.Store, log *slog.Logger) error {
	ids, err := files.JobIDs()
	if err != nil {
		return fmt.Errorf("serve: list job files: %w", err)
	}
	skipped := map[string]bool{}
	for _, id := range jobs.Skipped() {
		skipped[id] = true // unreadable, not absent: keep its files
	}
	for _, id := range ids {
		if _, err := jobs.Get(ctx, id); !errors.Is(err, export.ErrJobNotFound) || skipped[id] {
			continue
		}
		if err := files.DeleteJob(ctx, id); err != nil {
			log.Warn("delete files without a job", "job", id, "err", err)
			continue
		}
		log.Info("deleted files without a job", "job", id)
	}
	return nil
}

// janitor removes expired jobs and their files every minute (the embedded
// counterpart of S3 lifecycle rules and DynamoDB TTL).
func janitor(ctx context.Context, jobs *boltstore.Store, files *dirstore.Store, log *slog.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		expireJobs(ctx, jobs, files, time.Now(), log)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweeper dispatches queued jobs now and then periodically: the safety net
// behind the dispatch each kick-off, completion and cancel does.
func sweeper(ctx context.Context, svc *export.Service, rec metrics.Recorder, log *slog.Logger) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		rep, err := svc.Sweep(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn("sweep", "err", err)
		}
		if err == nil {
			stepmetrics.RecordSweep(ctx, rec, rep)
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

// source builds the configured source: an NDJSON directory or an upstream
// FHIR server.
func (c *serveConfig) source(ctx context.Context, log *slog.Logger) (export.Source, error) {
	if c.data != "" {
		// FIFOs, unreadable files and broken links are skipped by the
		// source; say so once, at start-up.
		problems, err := ndjsonsource.Dir(c.data).Problems()
		if err != nil {
			return nil, fmt.Errorf("serve: --data: %w", err)
		}
		for _, p := range problems {
			log.Warn("data: skipping an entry", "entry", p)
		}
		// Patient indexes of the data live in the state directory.
		return ndjsonsource.NewDir(c.data, ndjsonsource.Options{Index: ndjsonsource.IndexDir(filepath.Join(c.state, "patient-index"))})
	}
	st := c.upstream
	if c.sourceKeyFile != "" {
		pem, err := os.ReadFile(c.sourceKeyFile)
		if err != nil {
			return nil, fmt.Errorf("serve: --source-key: %w", err)
		}
		st.PrivateKeyPEM = pem
	} else if k := os.Getenv("BULKFHIR_SOURCE_KEY"); k != "" && st.ClientID != "" {
		st.PrivateKeyPEM = []byte(k)
	}
	var creds aws.CredentialsProvider
	if st.SigV4Region != "" {
		awsCfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(st.SigV4Region))
		if err != nil {
			return nil, fmt.Errorf("serve: AWS credentials for SigV4: %w", err)
		}
		creds = awsCfg.Credentials
	}
	auth, err := st.Authorizer(creds)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	return fhirsource.New(fhirsource.Options{BaseURL: st.URL, Auth: auth, PageSize: c.sourcePageSize,
		FollowCrossOrigin: c.sourceFollowOtherOrigins, Log: log})
}

// warmUp indexes an NDJSON source, or checks an upstream answers, before
// the server listens, so the first export does not wait and a wrong URL is
// reported at once. An upstream that does not answer is logged and the
// server starts anyway: kick-offs answer 503 until it is back.
func warmUp(ctx context.Context, source export.Source, log *slog.Logger) error {
	switch src := source.(type) {
	case *ndjsonsource.Source:
		counts, err := src.Counts(ctx)
		if err != nil {
			return err
		}
		total := int64(0)
		for _, n := range counts {
			total += n
		}
		log.Info("source indexed", "types", len(counts), "resources", total)
	case *fhirsource.Source:
		if err := src.Ready(ctx); err != nil {
			log.Warn("the upstream FHIR server does not answer yet; kick-offs answer 503 until it does", "err", err)
			return nil
		}
		types, _ := src.Types(ctx)
		log.Info("upstream ready", "types", len(types))
	}
	return nil
}
