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

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/awstest"
	"github.com/bulkfhir/bulkfhir/shared/dynamostore"
	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/synth"
)

const (
	table         = "bulkfhir-jobs"
	bucket        = "bulkfhir-exports"
	sourceBucket  = "bulkfhir-source"
	sourcePrefix  = "fhir/"
	publicBase    = "https://bulkfhirapi.execute-api.us-east-1.amazonaws.com/fhir"
	stateMachine  = "arn:aws:states:us-east-1:123456789012:stateMachine:bulkfhir-export"
	functionArn   = "arn:aws:lambda:us-east-1:123456789012:function:bulkfhir-"
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
	api      *lambdaenv.Env
	task     *lambdaenv.Env
	lambda   *httptest.Server
	sfn      *httptest.Server
	s3       *s3.Client
	emulated []*awstest.Emulator

	mu          sync.Mutex
	executions  map[string]*execution
	invocations map[string]int
	failOnce    map[string]bool // unit ids whose first chunk fails after running
	failAlways  map[string]bool // unit ids whose chunks always fail
	injected    int
}

type execution struct {
	cmd    *exec.Cmd
	out    bytes.Buffer
	done   chan struct{}
	killed bool
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
	cl := &cluster{root: root, executions: map[string]*execution{}, invocations: map[string]int{}, failOnce: map[string]bool{}, failAlways: map[string]bool{}}
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
	cl.lambda = httptest.NewServer(http.HandlerFunc(cl.serveLambda))
	cl.sfn = httptest.NewServer(http.HandlerFunc(cl.serveSFN))
	cl.env = map[string]string{
		"AWS_ENDPOINT_URL_DYNAMODB": ddb.Endpoint,
		"AWS_ENDPOINT_URL_S3":       minio.Endpoint,
		"AWS_ENDPOINT_URL_SFN":      cl.sfn.URL,
		"AWS_ENDPOINT_URL_LAMBDA":   cl.lambda.URL,
		"AWS_ACCESS_KEY_ID":         awstest.AccessKey,
		"AWS_SECRET_ACCESS_KEY":     awstest.SecretKey,
		"AWS_REGION":                awstest.Region,
		lambdaenv.EnvTable:          table,
		lambdaenv.EnvBucket:         bucket,
		lambdaenv.EnvStateMachine:   stateMachine,
		lambdaenv.EnvPublicBaseURL:  publicBase,
		lambdaenv.EnvSourceBucket:   sourceBucket,
		lambdaenv.EnvSourcePrefix:   sourcePrefix,
		lambdaenv.EnvRetention:      "2h",
		// The export tests run anonymous (as bulkfhir:allowAnonymous=true
		// deploys); TestBulkfhirTokensOnAWS turns bulkfhir's tokens on.
		lambdaenv.EnvAuth:         lambdaenv.AuthNone,
		lambdaenv.EnvMaxFileBytes: "150000",
		// Every chunk stops after its first 512 resources: units loop
		// through the state machine's cursor Choice several times.
		lambdaenv.EnvChunkBudget: "1ns",
	}
	for k, v := range cl.env {
		os.Setenv(k, v)
	}
	ctx := context.Background()
	if cl.awsCfg, err = awstest.Config(ctx); err != nil {
		cl.close()
		return nil, err
	}
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

// envs configures the API and task functions as their main.go would, from
// getenv.
func (cl *cluster) envs(getenv func(string) string) (api, task *lambdaenv.Env, err error) {
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	// DynamoDB Local's error replies carry no valid checksum.
	noChecksum := func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true }
	for _, role := range []lambdaenv.Role{lambdaenv.RoleAPI, lambdaenv.RoleTask} {
		cfg, err := lambdaenv.Load(getenv, role)
		if err != nil {
			return nil, nil, err
		}
		deps, err := lambdaenv.Build(cfg, cl.awsCfg, log, noChecksum)
		if err != nil {
			return nil, nil, err
		}
		env := &lambdaenv.Env{Config: cfg, AWS: cl.awsCfg, Log: log, Deps: deps}
		if role == lambdaenv.RoleAPI {
			api = env
		} else {
			task = env
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
	if _, err := synth.Generate(cl.dataDir, synth.Options{Patients: testPatients, Seed: 1}); err != nil {
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
	def, err := Definition(cl.root, maxConcurrent)
	if err != nil {
		return err
	}
	cl.defPath = filepath.Join(cl.dataDir, "export.asl.json")
	return os.WriteFile(cl.defPath, []byte(def), 0o644)
}

// Definition is the committed ASL file with the substitutions the CDK stack
// makes.
func Definition(root string, maxConcurrency int) (string, error) {
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
	if cl.lambda != nil {
		cl.lambda.Close()
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
	steps := cl.task.Deps.Steps
	cl.mu.Unlock()
	switch name {
	case "plan":
		return lambda.NewHandler(steps.Plan)
	case "export":
		return lambda.NewHandler(steps.ExportChunk)
	case "finalize":
		return lambda.NewHandler(steps.Finalize)
	case "fail":
		return lambda.NewHandler(steps.Fail)
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
	h := cl.handlerFor(name)
	if h == nil {
		w.Header().Set("X-Amzn-ErrorType", "ResourceNotFoundException")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"Type":"User","message":"Function not found: %s"}`, name)
		return
	}
	payload, _ := io.ReadAll(r.Body)
	// Like a Lambda invocation: a deadline, here a generous one.
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Minute)
	defer cancel()
	out, err := h.Invoke(ctx, payload)
	cl.mu.Lock()
	cl.invocations[name]++
	inject := false
	if err == nil && name == "export" {
		var in struct {
			Unit struct{ ID string } `json:"unit"`
		}
		json.Unmarshal(payload, &in)
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
		go func() { cmd.Wait(); close(e.done) }()
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
