package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/bulkclient"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/s3sink"
)

// listFlag collects a repeatable flag; commas split values when split is set.
type listFlag struct {
	values *[]string
	split  bool
}

func (l listFlag) String() string {
	if l.values == nil {
		return ""
	}
	return strings.Join(*l.values, ",")
}

func (l listFlag) Set(v string) error {
	if !l.split {
		*l.values = append(*l.values, v)
		return nil
	}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l.values = append(*l.values, s)
		}
	}
	return nil
}

const exportExamples = `  bulkfhir export --server http://127.0.0.1:8080/fhir --out out
  bulkfhir export --server $BASE --group small-cohort --type Patient,Condition --out cohort
  bulkfhir export --server $BASE --patient 123 --patient 456 --out two-patients
  bulkfhir export --server $BASE --since-file last-export.txt --out "exports/$(date +%F-%H%M)"
  bulkfhir export --server $BASE --out s3://my-bucket/exports/today/
  bulkfhir export --server $BASE --output json --out out | jq .resources
  bulkfhir export --status "$STATUS_URL" --out out     (an export started elsewhere)
  bulkfhir export --server $BASE --out out --resume    (after Ctrl-C)

log in: --client-id ID --key key.pem (SMART Backend Services; the token endpoint is discovered)

environment: BULKFHIR_TOKEN (bearer token), BULKFHIR_CLIENT_KEY (PEM key for --client-id), AWS_* (credentials, region and
AWS_ENDPOINT_URL_S3 for --out s3://)
`

// clientFlags are the flags every client command shares.
type clientFlags struct {
	server, token, output string
}

func (f *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.server, "server", "", "FHIR base URL of a Bulk Data server")
	// The default is read after parsing, so -h never prints the secret.
	fs.StringVar(&f.token, "token", "", "bearer token (default $BULKFHIR_TOKEN; prefer the variable: flags show in ps)")
	fs.StringVar(&f.output, "output", "text", "text, or json for one JSON summary on stdout")
}

func (f *clientFlags) check() error {
	if f.token == "" {
		f.token = os.Getenv("BULKFHIR_TOKEN")
	}
	if f.output != "text" && f.output != "json" {
		return usagef("--output %q: want text or json", f.output)
	}
	return nil
}

func exportCmd(ctx context.Context, args []string, stdout io.Writer) error {
	var o bulkclient.Options
	var cf clientFlags
	var login loginFlags
	var sinceFile string
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	cf.register(fs)
	login.register(fs)
	fs.StringVar(&o.Level, "level", "", "system, patient or group (default: group with --group, patient with --patient, else system)")
	fs.StringVar(&o.Group, "group", "", "Group id: a Group export (implies --level group)")
	fs.Var(listFlag{&o.Types, true}, "type", "resource types, comma-separated or repeated")
	fs.StringVar(&o.Since, "since", "", "only resources updated after this FHIR instant")
	fs.StringVar(&sinceFile, "since-file", "", "incremental: _since from FILE's transactionTime (none yet: everything); FILE gets the new one after a complete export")
	fs.StringVar(&o.Until, "until", "", "only resources updated at or before this FHIR instant (STU3)")
	fs.Var(listFlag{&o.Elements, true}, "elements", "elements to keep, comma-separated or repeated")
	fs.Var(listFlag{&o.TypeFilters, false}, "type-filter", "a _typeFilter query such as Observation?category=laboratory (repeatable)")
	fs.Var(listFlag{&o.Patients, true}, "patient", "restrict to this Patient id (repeatable; implies --level patient and POST)")
	fs.Var(listFlag{&o.IncludeAssociatedData, true}, "include-associated-data", "includeAssociatedData codes")
	fs.BoolVar(&o.Post, "post", false, "kick off with POST and a Parameters body")
	fs.BoolVar(&o.PartialManifests, "partial-manifests", false, "send allowPartialManifests=true: follow the manifest's pages and download files while the export runs")
	fs.BoolVar(&o.PartialManifests, "allow-partial-manifests", false, "the same as --partial-manifests, named as the parameter")
	fs.StringVar(&o.OrganizeOutputBy, "organize-output-by", "", "send organizeOutputBy (Patient): files of one block per patient, checked after the download")
	fs.BoolVar(&o.Lenient, "lenient", false, "send Prefer: handling=lenient (the server may drop parameters it cannot honour; each is reported at kick-off)")
	fs.BoolVar(&o.StrictFilters, "strict-filters", false, "stop and cancel when the server drops a _typeFilter (default true with --type-filter)")
	fs.StringVar(&o.OutDir, "out", "out", "output folder, or s3://bucket/prefix")
	fs.IntVar(&o.Parallel, "parallel", 4, "parallel downloads")
	fs.BoolVar(&o.Resume, "resume", false, "continue the export recorded in --out, keeping complete files (the flags must match)")
	fs.BoolVar(&o.Force, "force", false, "replace the export already in --out")
	fs.StringVar(&o.StatusURL, "status", "", "poll and download this export (a status URL) instead of starting one")
	fs.BoolVar(&o.CancelOnAbort, "cancel-on-abort", false, "on Ctrl-C, cancel the export on the server (DELETE)")
	fs.BoolVar(&o.Attachments, "attachments", false, "also download DocumentReference content.attachment.url files into attachments/")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	if err := cf.check(); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.Server, o.Token = cf.server, cf.token
	var err error
	if o.Tokens, err = login.tokens(o.Server); err != nil {
		return err
	}
	if len(o.Patients) > 0 && set["post"] && !o.Post {
		return usagef("--patient needs a POST kick-off: it contradicts --post=false")
	}
	if o.OrganizeOutputBy != "" && o.OrganizeOutputBy != "Patient" {
		return usagef("--organize-output-by %q: only Patient, whose blocks the client can check", o.OrganizeOutputBy)
	}
	if len(o.TypeFilters) > 0 && !set["strict-filters"] {
		o.StrictFilters = true
	}
	if sinceFile != "" {
		switch {
		case o.Since != "":
			return usagef("--since and --since-file contradict each other")
		case o.StatusURL != "":
			return usagef("--since-file sets _since of a new kick-off: it contradicts --status")
		}
		since, err := readSinceFile(sinceFile)
		if err != nil {
			return err
		}
		o.Since = since
	}
	for name, v := range map[string]string{"--since": o.Since, "--until": o.Until} {
		if _, err := fhir.ParseInstant(v); v != "" && err != nil {
			return usagef("%s %q is not a FHIR instant (e.g. 2026-01-02T15:04:05Z)", name, v)
		}
	}
	if strings.HasPrefix(o.OutDir, "s3://") {
		sink, err := newS3Sink(ctx, o.OutDir)
		if err != nil {
			return err
		}
		o.Sink = sink
	}
	var rep bulkclient.Reporter = &bulkclient.LineReporter{W: os.Stderr}
	if isTerminal(os.Stderr) {
		rep = &bulkclient.BarReporter{W: os.Stderr}
	}
	c, err := bulkclient.New(o, nil, rep)
	if err != nil {
		return clientError(err)
	}
	stopProfile, err := cpuProfile("export") // BULKFHIR_CPUPROFILE=FILE
	if err != nil {
		return err
	}
	sum, err := c.Run(ctx)
	stopProfile()
	if err != nil {
		if cf.output == "json" {
			writeJSON(stdout, failureJSON(err))
		}
		var ie *bulkclient.Interrupted
		if ctx.Err() != nil && !errors.As(err, &ie) {
			// Interrupted before or after the protocol steps (reading the
			// folder, writing the record): still an interrupt.
			return &exitCodeError{code: exitInterrupted, msg: "interrupted: " + err.Error()}
		}
		return clientError(err)
	}
	sink := o.Sink
	if sink == nil {
		sink = bulkclient.DirSink{Dir: o.OutDir}
	}
	organized, problems, err := verifyOrganized(ctx, sink, o)
	if err != nil {
		return err
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, "PROBLEM", p)
	}
	if cf.output == "json" {
		js := sum.JSON()
		if organized {
			js["organizedProblems"] = nonNilStrings(problems)
		}
		writeJSON(stdout, js)
	} else {
		sum.Print(stdout)
		fmt.Fprintf(stdout, "files in %s (manifest.json as received)\n", sum.Location)
	}
	if len(problems) > 0 {
		msg := fmt.Sprintf("the export completed, but its files organized by Patient break the rules (%d problems, listed above); they are kept in %s", len(problems), sum.Location)
		if sinceFile != "" {
			msg += "; --since-file was not advanced"
		}
		return &exitCodeError{code: exitWithErrors, msg: msg}
	}
	if sum.HasErrors() {
		msg := "the export completed with errors (see the error files"
		if len(sum.Mismatches) > 0 {
			msg += ", the count mismatches"
		}
		if len(sum.Unasked) > 0 {
			msg += ", the files of types not asked for"
		}
		msg += ")"
		if sinceFile != "" {
			msg += "; --since-file was not advanced, so the next run asks for these changes again"
		}
		return &exitCodeError{code: exitWithErrors, msg: msg}
	}
	if sinceFile != "" {
		if err := writeSinceFile(sinceFile, sum.TransactionTime); err != nil {
			return err
		}
	}
	return nil
}

// clientError maps the client's option errors to usage errors (exit 2).
func clientError(err error) error {
	var ue *bulkclient.UsageError
	switch {
	case errors.As(err, &ue):
		return &usageError{msg: ue.Msg}
	case errors.Is(err, bulkclient.ErrOutputInUse), errors.Is(err, bulkclient.ErrResumeMismatch), errors.Is(err, bulkclient.ErrNothingToResume):
		return &usageError{msg: err.Error()}
	}
	return err
}

func failureJSON(err error) map[string]any {
	out := map[string]any{"status": "failed", "error": oneLine(err.Error())}
	var ie *bulkclient.Interrupted
	if errors.As(err, &ie) {
		left := ie.Left
		if left == nil {
			left = []string{}
		}
		out["status"] = "interrupted"
		out["stage"] = ie.Stage
		out["statusUrl"] = ie.StatusURL
		out["filesComplete"] = ie.Done
		out["filesLeft"] = left
		out["serverRunning"] = ie.Running
		out["cancelled"] = ie.Cancelled
	}
	return out
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// readSinceFile returns the transactionTime an earlier export wrote, or ""
// when FILE does not exist yet (the first run exports everything).
func readSinceFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("--since-file: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if _, err := fhir.ParseInstant(v); err != nil {
		return "", fmt.Errorf("--since-file %s: %q is not a FHIR instant", path, v)
	}
	return v, nil
}

// writeSinceFile replaces FILE atomically, so a crash leaves the old value.
func writeSinceFile(path, transactionTime string) error {
	if _, err := fhir.ParseInstant(transactionTime); err != nil {
		return fmt.Errorf("--since-file: the manifest's transactionTime %q is not a FHIR instant; %s not changed", transactionTime, path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".since-*")
	if err != nil {
		return fmt.Errorf("--since-file: %w", err)
	}
	_, err = tmp.WriteString(transactionTime + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("--since-file: %w", err)
	}
	return nil
}

// newS3Sink connects to S3 with the SDK's usual configuration (AWS_*
// variables, profiles, AWS_ENDPOINT_URL_S3 for an emulator).
func newS3Sink(ctx context.Context, out string) (bulkclient.Sink, error) {
	if _, _, err := bulkclient.ParseS3URL(out); err != nil {
		return nil, usagef("--out: %v", err)
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("--out %s: AWS configuration: %w", out, err)
	}
	return s3sink.New(s3.NewFromConfig(cfg), out, 0, 0)
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// urlCommand parses the flags of a command that takes one status URL.
func urlCommand(name string, args []string) (*bulkclient.Client, clientFlags, string, error) {
	var cf clientFlags
	var login loginFlags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cf.register(fs)
	login.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return nil, cf, "", err
	}
	tokens, err := login.tokens(cf.server)
	if err != nil {
		return nil, cf, "", err
	}
	if err := cf.check(); err != nil {
		return nil, cf, "", err
	}
	if fs.NArg() != 1 {
		return nil, cf, "", usagef("want one status URL, got %d arguments", fs.NArg())
	}
	c, err := bulkclient.New(bulkclient.Options{Server: cf.server, StatusURL: fs.Arg(0), Token: cf.token, Tokens: tokens}, nil, nil)
	if err != nil {
		return nil, cf, "", clientError(err)
	}
	return c, cf, fs.Arg(0), nil
}

// statusCmd asks a status URL once.
func statusCmd(ctx context.Context, args []string, stdout io.Writer) error {
	c, cf, statusURL, err := urlCommand("status", args)
	if err != nil {
		return err
	}
	rep, err := c.Status(ctx, statusURL)
	if err != nil {
		return clientError(err)
	}
	if cf.output == "json" {
		writeJSON(stdout, rep)
	} else {
		switch rep.State {
		case "in-progress":
			p := rep.Progress
			if p == "" {
				p = "no progress reported"
			}
			fmt.Fprintf(stdout, "in progress: %s (poll again in %s)\n", p, rep.RetryAfter)
		case "complete":
			var n int64
			for _, e := range rep.Manifest.Output {
				if e.Count != nil {
					n += *e.Count
				}
			}
			fmt.Fprintf(stdout, "complete: transactionTime %s, %d output files (%d resources), %d error files, %d deleted files\n",
				rep.Manifest.TransactionTime, len(rep.Manifest.Output), n, len(rep.Manifest.Error), len(rep.Manifest.Deleted))
			fmt.Fprintf(stdout, "download with: bulkfhir export --status %s --out DIR\n", statusURL)
		default:
			fmt.Fprintf(stdout, "failed: %s\n", rep.Error)
		}
	}
	if rep.State == "failed" {
		return &exitCodeError{code: exitFailure, msg: "export failed: " + rep.Error}
	}
	return nil
}

// cancelCmd cancels an export by its status URL.
func cancelCmd(ctx context.Context, args []string, stdout io.Writer) error {
	c, cf, statusURL, err := urlCommand("cancel", args)
	if err != nil {
		return err
	}
	status, err := c.Cancel(ctx, statusURL)
	if err != nil {
		if cf.output == "json" {
			writeJSON(stdout, map[string]any{"cancelled": false, "error": oneLine(err.Error())})
		}
		return err
	}
	if cf.output == "json" {
		writeJSON(stdout, map[string]any{"cancelled": true, "httpStatus": status})
	} else {
		fmt.Fprintf(stdout, "cancelled (%s): the server deletes the export's files\n", status)
	}
	return nil
}
