package functions_test

// The AWS path end to end on this machine: DynamoDB Local and MinIO over
// their real wire protocols, the committed state machine definition run by
// aws-local-stepfunctions, started through a fake Step Functions endpoint
// (real SFN JSON protocol, so the production sfnrunner and SDK client are
// exercised), and Lambda invocations answered in-process by the very
// handlers the functions' main.go files start.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/bulkfhir/bulkfhir/shared/apigw"
	"github.com/bulkfhir/bulkfhir/shared/awstest"
	"github.com/bulkfhir/bulkfhir/shared/dynamostore"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/lambdaauth"
	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/lambdasource"
	"github.com/bulkfhir/bulkfhir/shared/s3store"
	"github.com/bulkfhir/bulkfhir/shared/sampledata"
	"github.com/bulkfhir/bulkfhir/shared/settings"
	"github.com/bulkfhir/bulkfhir/shared/sfnrunner"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
	"github.com/bulkfhir/bulkfhir/shared/stepmetrics"
)

const (
	table         = "bulkfhir-jobs"
	bucket        = "bulkfhir-exports"
	sourceBucket  = "bulkfhir-source"
	sourcePrefix  = "fhir/"
	publicBase    = "https://bulkfhirapi.execute-api.us-east-1.amazonaws.com/fhir"
	stateMachine  = "arn:aws:states:us-east-1:123456789012:stateMachine:bulkfhir-export"
	functionArn   = "arn:aws:lambda:us-east-1:123456789012:function:bulkfhir-"
	signerRoleARN = "arn:aws:iam::123456789012:role/bulkfhir-download-signer"
	testPatients  = 20
	maxConcurrent = 4
)

// cluster is the emulated AWS environment shared by the tests.
type cluster struct {
	root     string
	dataDir  string
	defPath  string
	env      map[string]string
	awsCfg   aws.Config
	api      *fn
	task     *fn
	lambda   *httptest.Server
	sfn      *httptest.Server
	dynamo   *httptest.Server // DynamoDB Local behind the item size check
	s3       *s3.Client
	emulated []*awstest.Emulator

	worker   *worker
	counter  *requestCounter
	maps     map[string]*distributedMap
	exportPx string

	mu          sync.Mutex
	limits      limitStats
	executions  map[string]*execution
	invocations map[string]int
	failOnce    map[string]bool          // unit ids whose first chunk fails after running
	failAlways  map[string]bool          // unit ids whose chunks always fail
	bloat       map[string]int           // unit ids whose chunk results get this many bytes more
	block       map[string]chan struct{} // unit ids whose chunks wait for this (or their deadline)
	// capture, when set, receives every Lambda invocation's payload and
	// response (what Step Functions keeps in an execution's history).
	capture  func(payload, response []byte)
	injected int
}

type execution struct {
	cmd    *exec.Cmd
	out    bytes.Buffer
	done   chan struct{}
	killed bool
	// status is how it ended (SUCCEEDED, FAILED, TIMED_OUT, ABORTED),
	// set before done closes.
	status string
}

// limitStats are the largest figures the fake endpoints saw, against the
// AWS limits, and every limit crossed.
type limitStats struct {
	MaxStateBytes    int
	MaxHistoryEvents int
	MaxLambdaBytes   int
	MaxItemBytes     int
	Executions       int
	Transitions      int
	Crossed          []string
}

// record notes one execution's figures.
func (cl *cluster) record(o outcome) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.limits.Executions++
	cl.limits.Transitions += o.Transitions
	cl.limits.MaxStateBytes = max(cl.limits.MaxStateBytes, o.MaxStateBytes)
	cl.limits.MaxHistoryEvents = max(cl.limits.MaxHistoryEvents, o.Events)
	if o.Limit != "" {
		cl.limits.Crossed = append(cl.limits.Crossed, o.Limit)
	}
}

// crossed notes a limit crossed outside an execution.
func (cl *cluster) crossed(what string) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.limits.Crossed = append(cl.limits.Crossed, what)
}

// takeCrossed returns and forgets the limits crossed so far (a negative
// test expects its own).
func (cl *cluster) takeCrossed() []string {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	out := cl.limits.Crossed
	cl.limits.Crossed = nil
	return out
}

var (
	c        *cluster
	setupErr error
)

func TestMain(m *testing.M) {
	if d, err := time.ParseDuration(os.Getenv("BULKFHIR_TEST_WAIT")); err == nil {
		waitLimit = d
	}
	c, setupErr = newCluster()
	code := m.Run()
	if c != nil {
		// A test that crossed an AWS limit without expecting it fails the
		// run: on AWS it would have failed.
		if crossed := c.takeCrossed(); len(crossed) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: AWS limits crossed: %s\n", strings.Join(crossed, "; "))
			code = 1
		}
		c.close()
	}
	os.Exit(code)
}

func need(t *testing.T) *cluster {
	t.Helper()
	awstest.Handle(t, setupErr)
	return c
}

func newCluster() (*cluster, error) {
	root, err := awstest.RepoRoot()
	if err != nil {
		return nil, err
	}
	cl := &cluster{root: root, exportPx: "exports/", executions: map[string]*execution{}, invocations: map[string]int{}, failOnce: map[string]bool{}, failAlways: map[string]bool{},
		bloat: map[string]int{}, block: map[string]chan struct{}{}}
	if _, err := os.Stat(filepath.Join(root, "infra", "node_modules", "aws-local-stepfunctions")); err != nil {
		return nil, fmt.Errorf("aws-local-stepfunctions: %w", awstest.ErrMissing)
	}
	ddb, err := awstest.StartDynamoDB()
	if err != nil {
		return nil, err
	}
	cl.emulated = append(cl.emulated, ddb)
	minio, err := awstest.StartMinIO()
	if err != nil {
		cl.close()
		return nil, err
	}
	cl.emulated = append(cl.emulated, minio)
	proxy, err := newDynamoProxy(cl, ddb.Endpoint)
	if err != nil {
		cl.close()
		return nil, err
	}
	cl.dynamo = httptest.NewServer(proxy)
	cl.lambda = httptest.NewServer(http.HandlerFunc(cl.serveLambda))
	cl.sfn = httptest.NewServer(http.HandlerFunc(cl.serveSFN))
	cl.env = map[string]string{
		"AWS_ENDPOINT_URL_DYNAMODB": cl.dynamo.URL,
		"AWS_ENDPOINT_URL_S3":       minio.Endpoint,
		"AWS_ENDPOINT_URL_SFN":      cl.sfn.URL,
		"AWS_ENDPOINT_URL_LAMBDA":   cl.lambda.URL,
		"AWS_ACCESS_KEY_ID":         awstest.AccessKey,
		"AWS_SECRET_ACCESS_KEY":     awstest.SecretKey,
		"AWS_REGION":                awstest.Region,
		settings.EnvTable:           table,
		settings.EnvBucket:          bucket,
		settings.EnvStateMachine:    stateMachine,
		settings.EnvPublicBaseURL:   publicBase,
		settings.EnvSourceBucket:    sourceBucket,
		settings.EnvSourcePrefix:    sourcePrefix,
		settings.EnvRetention:       "2h",
		// The export tests run anonymous (as bulkfhir:allowAnonymous=true
		// deploys); TestBulkfhirTokensOnAWS turns bulkfhir's tokens on.
		settings.EnvAuth:         settings.AuthNone,
		settings.EnvMaxFileBytes: "150000",
		// Every chunk stops after its first 512 resources: units loop
		// through the state machine's cursor Choice several times.
		settings.EnvChunkBudget: "1ns",
		// Links are signed with sessions of the download-signer role, as
		// the stack configures the status function: MinIO's STS issues
		// them, and checks them on every presigned GET.
		"AWS_ENDPOINT_URL_STS":        minio.Endpoint,
		settings.EnvLinkSignerRoleARN: signerRoleARN,
	}
	for k, v := range cl.env {
		os.Setenv(k, v)
	}
	// The runner of child executions reads the endpoints and credentials
	// from its environment.
	if cl.worker, err = startWorker(root); err != nil {
		cl.close()
		return nil, err
	}
	ctx := context.Background()
	if cl.awsCfg, err = awstest.Config(ctx); err != nil {
		cl.close()
		return nil, err
	}
	var next aws.HTTPClient = cl.awsCfg.HTTPClient
	if next == nil {
		next = awshttp.NewBuildableClient()
	}
	cl.counter = &requestCounter{counts: map[string]int{}, next: next}
	cl.awsCfg.HTTPClient = cl.counter
	if err := cl.provision(ctx); err != nil {
		cl.close()
		return nil, err
	}
	if cl.api, cl.task, err = cl.envs(os.Getenv); err != nil {
		cl.close()
		return nil, err
	}
	return cl, nil
}

// fn is a function configured as its main.go wires it (the same helpers,
// in the same order).
type fn struct {
	Config lambdaenv.Config
	Jobs   *dynamostore.Store
	Files  *s3store.Store
	Source export.Source
	Steps  *stepmetrics.Steps
	// Keys verify bulkfhir's access tokens (API functions, Auth bulkfhir).
	Keys   *smartauth.Keys
	awsCfg aws.Config
	log    *slog.Logger
	// getenv is the environment it was configured from.
	getenv func(string) string
}

// service is the export service of the kickoff, status and dispatch
// functions (their main.go): the runner, the queue, the metrics.
func (f *fn) service() *export.Service {
	runner := sfnrunner.New(sfn.NewFromConfig(f.awsCfg), f.Config.StateMachineARN)
	links, _ := apigw.DownloadLinks(f.Files, f.Config.Downloads.Redirect(), f.Config.StatusOnly)
	svc := export.NewService(f.Jobs, links, runner, f.Source, f.Config.Export(), f.log)
	lambdaenv.Observe(svc, f.Jobs, f.Config, lambdaenv.Metrics(f.Config))
	return svc
}

// DispatchHandler is the dispatch function's handler (functions/dispatch).
func (f *fn) DispatchHandler() func(context.Context, json.RawMessage) (*export.SweepReport, error) {
	return lambdaenv.DispatchHandler(f.service(), lambdaenv.Metrics(f.Config), f.log)
}

// APIHandler is the kickoff function's handler (functions/kickoff).
func (f *fn) APIHandler() func(context.Context, json.RawMessage) (any, error) {
	svc := f.service()
	_, deliver := apigw.DownloadLinks(f.Files, f.Config.Downloads.Redirect(), f.Config.StatusOnly)
	h := apigw.Handler(svc, apigw.Options{
		BaseURL: f.Config.PublicBaseURL, Auth: f.Config.Auth, TokenURL: f.Config.TokenURL, Keys: f.Keys,
		StatusOnly: f.Config.StatusOnly, Deliver: deliver, Log: f.log,
	})
	return apigw.NewGateway(h).Invoke
}

// envs configures the API and task functions as their main.go would, from
// getenv.
func (cl *cluster) envs(getenv func(string) string) (api, task *fn, err error) {
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	// DynamoDB Local's error replies carry no valid checksum.
	noChecksum := func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true }
	for _, role := range []lambdaenv.Role{lambdaenv.RoleAPI, lambdaenv.RoleTask} {
		cfg, err := lambdaenv.Load(getenv, role)
		if err != nil {
			return nil, nil, err
		}
		s3c := lambdaenv.S3(cl.awsCfg)
		src, err := lambdasource.New(cfg, cl.awsCfg, s3c, log)
		if err != nil {
			return nil, nil, err
		}
		f := &fn{Config: cfg, Jobs: lambdaenv.Jobs(cfg, cl.awsCfg, noChecksum), Files: lambdaenv.Files(cfg, s3c), Source: src, awsCfg: cl.awsCfg, log: log, getenv: getenv}
		lambdaenv.SignLinks(f.Files, cfg, cl.awsCfg)
		f.Steps = lambdaenv.Steps(cfg, f.Jobs, f.Files, f.Source, log)
		if role == lambdaenv.RoleAPI {
			if f.Keys, err = lambdaauth.APIKeys(context.Background(), cl.awsCfg, cfg.Auth, cfg.TokenSecretARN); err != nil {
				return nil, nil, err
			}
			api = f
		} else {
			task = f
		}
	}
	return api, task, nil
}

// withEnv runs the functions with extra environment variables (as a stack
// configured differently would) until the test ends.
func (cl *cluster) withEnv(t *testing.T, extra map[string]string) {
	t.Helper()
	getenv := func(k string) string {
		if v, ok := extra[k]; ok {
			return v
		}
		return os.Getenv(k)
	}
	apiEnv, taskEnv, err := cl.envs(getenv)
	if err != nil {
		t.Fatal(err)
	}
	cl.mu.Lock()
	api, task := cl.api, cl.task
	cl.api, cl.task = apiEnv, taskEnv
	cl.mu.Unlock()
	t.Cleanup(func() {
		cl.mu.Lock()
		cl.api, cl.task = api, task
		cl.mu.Unlock()
	})
}

// provision creates what the CDK stack would: the table, the export bucket,
// the source data in S3, and the state machine definition with its
// substitutions.
func (cl *cluster) provision(ctx context.Context) error {
	ddb := dynamodb.NewFromConfig(cl.awsCfg, func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true })
	if err := dynamostore.CreateTable(ctx, ddb, table); err != nil {
		return err
	}
	cl.s3 = s3.NewFromConfig(cl.awsCfg)
	for _, b := range []string{bucket, sourceBucket} {
		if _, err := cl.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)}); err != nil {
			return fmt.Errorf("create bucket %s: %w", b, err)
		}
	}
	var err error
	if cl.dataDir, err = os.MkdirTemp("", "bulkfhir-aws-data-"); err != nil {
		return err
	}
	if _, err := sampledata.Generate(cl.dataDir, sampledata.Options{Patients: testPatients, Seed: 1}); err != nil {
		return err
	}
	files, _ := filepath.Glob(filepath.Join(cl.dataDir, "*.ndjson"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if _, err := cl.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(sourceBucket),
			Key: aws.String(sourcePrefix + filepath.Base(f)), Body: bytes.NewReader(b)}); err != nil {
			return err
		}
	}
	return cl.useDefinition(maxConcurrent, 3600)
}

// useDefinition substitutes the committed definition as the stack would
// and splits off its Distributed Map states for the fake to play.
func (cl *cluster) useDefinition(maxConcurrency, timeoutSeconds int) error {
	def, err := definition(cl.root, maxConcurrency, timeoutSeconds)
	if err != nil {
		return err
	}
	parent, maps, err := splitDistributed([]byte(def), functionArn+"dmap-")
	if err != nil {
		return err
	}
	path := filepath.Join(cl.dataDir, fmt.Sprintf("export-%d-%d.asl.json", maxConcurrency, timeoutSeconds))
	if err := os.WriteFile(path, parent, 0o644); err != nil {
		return err
	}
	cl.mu.Lock()
	cl.defPath, cl.maps = path, maps
	cl.mu.Unlock()
	return nil
}

// Definition is the committed ASL file with the substitutions the CDK stack
// makes.
func Definition(root string, maxConcurrency int) (string, error) {
	return definition(root, maxConcurrency, 3600)
}

func definition(root string, maxConcurrency, timeoutSeconds int) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "infra", "statemachine", "export.asl.json"))
	if err != nil {
		return "", err
	}
	r := strings.NewReplacer(
		"${PlanFunctionArn}", functionArn+"plan",
		"${ExportFunctionArn}", functionArn+"export",
		"${FinalizeFunctionArn}", functionArn+"finalize",
		"${FailFunctionArn}", functionArn+"fail",
		"${MaxConcurrency}", fmt.Sprint(maxConcurrency),
		"${TimeoutSeconds}", fmt.Sprint(timeoutSeconds),
		"${ExportBucket}", bucket,
		"${ExportPrefix}", "exports/",
	)
	def := r.Replace(string(b))
	if strings.Contains(def, "${") {
		return "", fmt.Errorf("unsubstituted value in the definition")
	}
	if !json.Valid([]byte(def)) {
		return "", fmt.Errorf("the substituted definition is not JSON")
	}
	return def, nil
}

func (cl *cluster) close() {
	cl.mu.Lock()
	for _, e := range cl.executions {
		if e.cmd.Process != nil {
			syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	cl.mu.Unlock()
	if cl.worker != nil {
		cl.worker.close()
	}
	if cl.lambda != nil {
		cl.lambda.Close()
	}
	if cl.dynamo != nil {
		cl.dynamo.Close()
	}
	if cl.sfn != nil {
		cl.sfn.Close()
	}
	for _, e := range cl.emulated {
		e.Stop()
	}
	if cl.dataDir != "" {
		os.RemoveAll(cl.dataDir)
	}
}

// handlerFor is the handler each function's main.go passes to lambda.Start.
func (cl *cluster) handlerFor(name string) lambda.Handler {
	cl.mu.Lock()
	steps := cl.task.Steps
	cl.mu.Unlock()
	switch name {
	case "plan":
		return lambda.NewHandler(steps.Plan)
	case "export":
		return lambda.NewHandler(steps.ExportChunk)
	case "finalize":
		return lambda.NewHandler(steps.Finalize)
	case "fail":
		return lambda.NewHandler(sfnrunner.FailHandler(steps.Fail))
	case "dispatch":
		cl.mu.Lock()
		api := cl.api
		cl.mu.Unlock()
		return lambda.NewHandler(api.DispatchHandler())
	}
	return nil
}

// errorType is what the Lambda Go runtime reports as errorType.
func errorType(err error) string {
	t := reflect.TypeOf(err)
	if t.Kind() == reflect.Ptr {
		return t.Elem().Name()
	}
	return t.Name()
}

// serveLambda answers POST /2015-03-31/functions/{name}/invocations like the
// Lambda service, running the real handler in-process.
func (cl *cluster) serveLambda(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(r.URL.Path, "/")
	if len(parts) < 5 || parts[len(parts)-1] != "invocations" {
		http.Error(w, "not an invoke", http.StatusNotFound)
		return
	}
	name := parts[len(parts)-2]
	if i := strings.LastIndex(name, "function:"); i >= 0 {
		name = name[i+len("function:"):]
	}
	name = strings.TrimPrefix(name, "bulkfhir-")
	payload, _ := io.ReadAll(r.Body)
	if state, ok := strings.CutPrefix(name, "dmap-"); ok {
		cl.serveMap(w, r, state, payload)
		return
	}
	h := cl.handlerFor(name)
	if h == nil {
		w.Header().Set("X-Amzn-ErrorType", "ResourceNotFoundException")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"Type":"User","message":"Function not found: %s"}`, name)
		return
	}
	// Like a Lambda invocation: a deadline, here a generous one.
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Minute)
	defer cancel()
	var in struct {
		Unit struct{ ID string } `json:"unit"`
	}
	if name == "export" {
		json.Unmarshal(payload, &in)
	}
	cl.mu.Lock()
	gate := cl.block[in.Unit.ID]
	cl.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
		}
	}
	out, err := h.Invoke(ctx, payload)
	cl.mu.Lock()
	if n := cl.bloat[in.Unit.ID]; n > 0 && err == nil {
		out = append(out[:len(out)-1], []byte(`,"padding":"`+strings.Repeat("x", n)+`"}`)...)
	}
	if cl.capture != nil {
		cl.capture(payload, out)
	}
	cl.invocations[name]++
	cl.limits.MaxLambdaBytes = max(cl.limits.MaxLambdaBytes, len(out))
	inject := false
	if err == nil && name == "export" {
		if cl.failOnce[in.Unit.ID] || cl.failAlways[in.Unit.ID] {
			delete(cl.failOnce, in.Unit.ID)
			cl.injected++
			inject = true
		}
	}
	cl.mu.Unlock()
	if inject {
		// The chunk ran and wrote its files; the invocation still fails,
		// as if the function crashed before replying. The state machine
		// retries it with the same input.
		err = fmt.Errorf("injected failure after the chunk ran")
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
		json.NewEncoder(w).Encode(map[string]string{"errorType": "RetryableError", "errorMessage": err.Error()})
		return
	}
	if err != nil {
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
		json.NewEncoder(w).Encode(map[string]string{"errorType": errorType(err), "errorMessage": err.Error()})
		return
	}
	if len(out) > maxLambdaResponse {
		// The Lambda service refuses a response over 6 MB.
		cl.crossed(fmt.Sprintf("%s response of %d bytes is over the %d-byte Lambda limit", name, len(out), maxLambdaResponse))
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
		json.NewEncoder(w).Encode(map[string]string{"errorType": "Function.ResponseSizeTooLarge", "errorMessage": "Response payload size exceeded maximum allowed payload size"})
		return
	}
	w.Write(out)
}

// serveMap plays the Distributed Map state for the parent execution's
// stand-in task: children run in the shared runner process; the parent's
// connection closing (a stopped execution) aborts them.
func (cl *cluster) serveMap(w http.ResponseWriter, r *http.Request, state string, input []byte) {
	cl.mu.Lock()
	m := cl.maps[state]
	cl.mu.Unlock()
	if m == nil {
		w.Header().Set("X-Amzn-ErrorType", "ResourceNotFoundException")
		w.WriteHeader(http.StatusNotFound)
		return
	}
	runID := fmt.Sprintf("%s-%d", state, time.Now().UnixNano())

	out, err := m.run(r.Context(), runID, input, mapIO{
		read: func(ctx context.Context, b, key string) ([]byte, error) {
			o, err := cl.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b), Key: aws.String(key)})
			if err != nil {
				return nil, err
			}
			defer o.Body.Close()
			return io.ReadAll(o.Body)
		},
		write: func(ctx context.Context, b, key string, body []byte) error {
			_, err := cl.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(b), Key: aws.String(key), Body: bytes.NewReader(body)})
			return err
		},
		child: func(ctx context.Context, def json.RawMessage, in []byte) (outcome, error) {
			o, err := cl.worker.run(ctx, def, in)
			if err == nil {
				cl.record(o)
			}
			return o, err
		},
	})
	if err != nil {
		name := "States.Runtime"
		var me *mapError
		if errors.As(err, &me) {
			name = me.Name
		}
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
		json.NewEncoder(w).Encode(map[string]string{"errorType": name, "errorMessage": err.Error()})
		return
	}
	w.Write(out)
}

// serveSFN answers the Step Functions JSON protocol for StartExecution and
// StopExecution, running each execution in aws-local-stepfunctions.
func (cl *cluster) serveSFN(w http.ResponseWriter, r *http.Request) {
	var in map[string]string
	json.NewDecoder(r.Body).Decode(&in)
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	fail := func(code, msg string) {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"__type": code, "message": msg})
	}
	switch op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "AWSStepFunctions."); op {
	case "StartExecution":
		if in["stateMachineArn"] != stateMachine {
			fail("StateMachineDoesNotExist", "no state machine "+in["stateMachineArn"])
			return
		}
		name := in["name"]
		cl.mu.Lock()
		defer cl.mu.Unlock()
		if _, ok := cl.executions[name]; ok {
			fail("ExecutionAlreadyExists", "execution "+name+" exists")
			return
		}
		cmd := exec.Command("node", filepath.Join(cl.root, "infra", "statemachine", "run-local.mjs"), cl.defPath, in["input"])
		cmd.Env = append(os.Environ(), "BULKFHIR_RETRY_MS=0", "NODE_NO_WARNINGS=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		e := &execution{cmd: cmd, done: make(chan struct{})}
		cmd.Stdout, cmd.Stderr = &e.out, &e.out
		if err := cmd.Start(); err != nil {
			fail("InternalError", err.Error())
			return
		}
		cl.executions[name] = e
		go cl.finish(name, e)
		json.NewEncoder(w).Encode(map[string]any{
			"executionArn": strings.Replace(stateMachine, ":stateMachine:", ":execution:", 1) + ":" + name,
			"startDate":    float64(time.Now().Unix()),
		})
	case "StopExecution":
		arn := in["executionArn"]
		name := arn[strings.LastIndex(arn, ":")+1:]
		cl.mu.Lock()
		e, ok := cl.executions[name]
		if ok {
			e.killed = true
			syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
		}
		cl.mu.Unlock()
		if !ok {
			fail("ExecutionDoesNotExist", "no execution "+arn)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"stopDate": float64(time.Now().Unix())})
	default:
		fail("UnknownOperationException", "unsupported: "+op)
	}
}

// execution returns the execution started for a job.
func (cl *cluster) execution(job string) *execution {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.executions[job]
}

// gatewayCall sends an API Gateway event through a function's handler as
// Lambda would (JSON in) and returns the HTTP API response it answered with.
func gatewayCall(ctx context.Context, h func(context.Context, json.RawMessage) (any, error), ev events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	raw, err := json.Marshal(ev)
	if err != nil {
		return events.APIGatewayV2HTTPResponse{}, err
	}
	out, err := h(ctx, raw)
	if err != nil {
		return events.APIGatewayV2HTTPResponse{}, err
	}
	resp, ok := out.(events.APIGatewayV2HTTPResponse)
	if !ok {
		return resp, fmt.Errorf("a 2.0 event was answered with a %T", out)
	}
	return resp, nil
}

// finish waits for a parent execution, records its figures and, as the
// stack's EventBridge rule does for FAILED, TIMED_OUT and ABORTED
// executions, invokes the fail function with the status change event.
func (cl *cluster) finish(name string, e *execution) {
	err := e.cmd.Wait()
	var o outcome
	lines := strings.Split(strings.TrimSpace(e.out.String()), "\n")
	json.Unmarshal([]byte(lines[len(lines)-1]), &o)
	cl.mu.Lock()
	killed := e.killed
	cl.mu.Unlock()
	status := "SUCCEEDED"
	switch {
	case killed:
		status = "ABORTED"
	case err == nil:
	case o.Error == "States.Timeout":
		status = "TIMED_OUT"
	default:
		status = "FAILED"
	}
	if !killed {
		cl.record(o)
	}
	if status != "SUCCEEDED" {
		ev, _ := json.Marshal(map[string]any{
			"version": "0", "source": "aws.states", "detail-type": settings.StatusChangeDetailType,
			"detail": map[string]any{"executionArn": sfnrunner.ExecutionARN(stateMachine, name), "stateMachineArn": stateMachine,
				"name": name, "status": status, "error": o.Error, "cause": o.Cause},
		})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if _, err := cl.handlerFor("fail").Invoke(ctx, ev); err != nil {
			fmt.Fprintf(os.Stderr, "the fail function refused the status change of %s: %v\n", name, err)
		}
		cancel()
	}
	// The stack's rule on every ended execution: the dispatch function
	// starts the next queued job.
	ev, _ := json.Marshal(map[string]any{
		"version": "0", "source": "aws.states", "detail-type": settings.StatusChangeDetailType,
		"detail": map[string]any{"name": name, "status": status},
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if _, err := cl.handlerFor("dispatch").Invoke(ctx, ev); err != nil {
		fmt.Fprintf(os.Stderr, "the dispatch function failed after %s ended: %v\n", name, err)
	}
	cancel()
	cl.mu.Lock()
	e.status = status
	cl.mu.Unlock()
	close(e.done)
}
