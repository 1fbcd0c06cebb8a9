package functions_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
)

// TestStateMachineDefinitionIsValid validates the committed ASL file (with
// the stack's substitutions) with asl-validator, and checks the validator
// rejects a broken copy, so the check can fail.
func TestStateMachineDefinitionIsValid(t *testing.T) {
	cl := need(t)
	validator := filepath.Join(cl.root, "infra", "node_modules", ".bin", "asl-validator")
	run := func(def string) ([]byte, error) {
		path := filepath.Join(t.TempDir(), "def.json")
		if err := os.WriteFile(path, []byte(def), 0o644); err != nil {
			t.Fatal(err)
		}
		return exec.Command(validator, "--json-path", path).CombinedOutput()
	}
	def, err := Definition(cl.root, maxConcurrent)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run(def); err != nil {
		t.Fatalf("asl-validator rejects the definition: %v\n%s", err, out)
	}
	broken := strings.Replace(def, `"Type": "Map"`, `"Type": "Mapp"`, 1)
	if broken == def {
		t.Fatal("test fixture: no Map state to break")
	}
	if out, err := run(broken); err == nil {
		t.Fatalf("asl-validator accepted a broken definition:\n%s", out)
	}
}

// TestBuiltBootstrapAnswersTheRuntimeAPI builds the status function like
// make lambdas does (for this machine's architecture so it can run here)
// and runs the binary against a fake Lambda Runtime API.
func TestBuiltBootstrapAnswersTheRuntimeAPI(t *testing.T) {
	cl := need(t)
	bin := filepath.Join(t.TempDir(), "bootstrap")
	build := exec.Command("go", "build", "-tags", "lambda.norpc", "-trimpath", "-ldflags=-s -w", "-o", bin, "./status")
	build.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+runtime.GOARCH, "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	event, err := os.ReadFile(filepath.Join(cl.root, "events", "status-get.json"))
	if err != nil {
		t.Fatal(err)
	}
	event = []byte(strings.ReplaceAll(string(event), "example-job", "no-such-job"))

	type result struct {
		kind string // response, error, init-error
		body []byte
	}
	results := make(chan result, 4)
	served := false
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", func(w http.ResponseWriter, r *http.Request) {
		if served {
			<-r.Context().Done() // no more work: block like the real API
			return
		}
		served = true
		w.Header().Set("Lambda-Runtime-Aws-Request-Id", "req-1")
		w.Header().Set("Lambda-Runtime-Deadline-Ms", fmt.Sprint(time.Now().Add(time.Minute).UnixMilli()))
		w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", functionArn+"status")
		w.Write(event)
	})
	for _, kind := range []string{"response", "error"} {
		mux.HandleFunc("POST /2018-06-01/runtime/invocation/req-1/"+kind, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			results <- result{kind, b}
			w.WriteHeader(http.StatusAccepted)
		})
	}
	mux.HandleFunc("POST /2018-06-01/runtime/init/error", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		results <- result{"init-error", b}
		w.WriteHeader(http.StatusAccepted)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "AWS_LAMBDA_RUNTIME_API="+ln.Addr().String(), "AWS_LAMBDA_FUNCTION_NAME=bulkfhir-status",
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	select {
	case r := <-results:
		if r.kind != "response" {
			t.Fatalf("runtime got %s: %s\n%s", r.kind, r.body, stderr.String())
		}
		var resp events.APIGatewayV2HTTPResponse
		if err := json.Unmarshal(r.body, &resp); err != nil {
			t.Fatalf("response is not an API Gateway v2 response: %v: %s", err, r.body)
		}
		// The sample event polls with Accept: application/json, so the
		// OperationOutcome comes labelled that way.
		if resp.StatusCode != 404 || !strings.Contains(resp.Body, `"OperationOutcome"`) || resp.Headers["Content-Type"] != "application/json" {
			t.Errorf("response = %d %v %s", resp.StatusCode, resp.Headers, resp.Body)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the bootstrap answered nothing:\n%s", stderr.String())
	}
}
