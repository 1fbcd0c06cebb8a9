// Package localstack_test checks what can be checked of the LocalStack and
// SAM workflows without Docker: the compose file, the scripts' syntax, the
// API URL derived from stack outputs, function ids resolved from the
// synthesized template, and a clear failure when Docker is missing.
package localstack_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Ports       []string          `yaml:"ports"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	ls, ok := doc.Services["localstack"]
	if !ok {
		t.Fatal("no localstack service")
	}
	// The free edition by default, pinned; the auth token optional.
	if ls.Image != "${LOCALSTACK_IMAGE:-localstack/localstack:4.14}" {
		t.Errorf("image %q: want the pinned free edition, overridable", ls.Image)
	}
	if tok := ls.Environment["LOCALSTACK_AUTH_TOKEN"]; tok != "${LOCALSTACK_AUTH_TOKEN:-}" {
		t.Errorf("LOCALSTACK_AUTH_TOKEN = %q: the free edition must start without one", tok)
	}
	if len(ls.Ports) != 1 || ls.Ports[0] != "127.0.0.1:4566:4566" {
		t.Errorf("ports = %v, want LocalStack's edge port on loopback only", ls.Ports)
	}
	// Which services: TestComposeServicesCoverTheTemplate (infra) derives
	// them from the synthesized template.
	if !strings.HasPrefix(ls.Environment["SERVICES"], "${LOCALSTACK_SERVICES:-") {
		t.Errorf("SERVICES = %q: up.sh sets LOCALSTACK_SERVICES", ls.Environment["SERVICES"])
	}
	if !strings.Contains(strings.Join(ls.Volumes, " "), "/var/run/docker.sock") {
		t.Error("the Docker socket is not mounted: Lambda functions could not run")
	}
}

func TestScriptsParse(t *testing.T) {
	scripts, _ := filepath.Glob("*.sh")
	if len(scripts) < 6 {
		t.Fatalf("scripts = %v", scripts)
	}
	for _, s := range scripts {
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", s, err, out)
		}
	}
}

func bashLib(t *testing.T, script string, env ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", "-c", "source ./lib.sh; "+script)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func TestAPIURLFromOutputs(t *testing.T) {
	out, err := bashLib(t, "api_url testdata/outputs.json")
	if err != nil || out != "https://a1b2c3.execute-api.localhost.localstack.cloud:4566/fhir" {
		t.Errorf("api_url = %q, %v", out, err)
	}
	// A REST API's URL as LocalStack reports it (the AWS domain) is
	// rewritten to LocalStack's own gateway, the stage kept.
	rest := filepath.Join(t.TempDir(), "rest.json")
	os.WriteFile(rest, []byte(`{"bulkfhir":{"FhirBaseUrl":"https://x9y8z7.execute-api.us-east-1.amazonaws.com/prod/fhir"}}`), 0o644)
	if out, err := bashLib(t, "api_url "+rest); err != nil || out != "http://x9y8z7.execute-api.localhost.localstack.cloud:4566/prod/fhir" {
		t.Errorf("api_url (REST) = %q, %v", out, err)
	}
	if out, err := bashLib(t, "api_url testdata/nothing.json"); err == nil || !strings.Contains(out, "localstack-deploy") {
		t.Errorf("missing outputs: %q, %v", out, err)
	}
	empty := filepath.Join(t.TempDir(), "o.json")
	os.WriteFile(empty, []byte(`{"bulkfhir":{}}`), 0o644)
	if out, err := bashLib(t, "api_url "+empty); err == nil || !strings.Contains(out, "FhirBaseUrl") {
		t.Errorf("outputs without the URL: %q, %v", out, err)
	}
}

func TestSamResolvesFunctionsInTheSynthesizedTemplate(t *testing.T) {
	tpl := filepath.Join("..", "infra", "cdk.out", "bulkfhir.template.json")
	if _, err := os.Stat(tpl); err != nil {
		t.Fatalf("run make synth first: %v", err)
	}
	for _, fn := range []string{"kickoff", "status", "plan", "export", "finalize", "fail"} {
		out, err := exec.Command("bash", "sam.sh", "resolve", fn).CombinedOutput()
		id := strings.TrimSpace(string(out))
		if err != nil || !strings.HasPrefix(id, strings.ToUpper(fn[:1])+fn[1:]) {
			t.Errorf("resolve %s = %q, %v", fn, id, err)
		}
	}
	if out, err := exec.Command("bash", "sam.sh", "resolve", "nope").CombinedOutput(); err == nil {
		t.Errorf("resolved an unknown function: %s", out)
	}
}

// TestTargetsFailClearlyWithoutDocker: with no Docker engine reachable,
// every Docker-dependent script stops with a message naming Docker and the
// Docker-free alternatives.
func TestTargetsFailClearlyWithoutDocker(t *testing.T) {
	for _, s := range []string{"up.sh", "deploy.sh", "e2e.sh", "down.sh"} {
		cmd := exec.Command("bash", s)
		cmd.Env = append(os.Environ(), "DOCKER_HOST=unix:///nonexistent/docker.sock", "LOCALSTACK_AUTH_TOKEN=x")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%s succeeded without Docker", s)
		}
		if !strings.Contains(string(out), "Docker") || !strings.Contains(string(out), "make demo") {
			t.Errorf("%s: unclear failure: %s", s, out)
		}
	}
	cmd := exec.Command("bash", "sam.sh", "invoke", "status", "../events/status-get.json")
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix:///nonexistent/docker.sock", "SAM_ENV=testdata/outputs.json")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "SAM CLI") && !strings.Contains(string(out), "Docker") {
		t.Errorf("sam invoke without SAM: %v %s", err, out)
	}
	// The HTTP API on LocalStack needs the paid edition: said before Docker is asked.
	cmd = exec.Command("bash", "up.sh")
	cmd.Env = append(os.Environ(), "API_TYPE=http", "LOCALSTACK_AUTH_TOKEN=")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "LOCALSTACK_AUTH_TOKEN") || !strings.Contains(string(out), "REST API") {
		t.Errorf("up.sh with the HTTP API and no token: %v %s", err, out)
	}
}

// TestSamInvokeNeedsTheEnvFile: without the --env-vars file SAM would run
// the function with empty names; sam.sh refuses and says what to run.
func TestSamInvokeNeedsTheEnvFile(t *testing.T) {
	for _, args := range [][]string{{"invoke", "status", "../events/status-get.json"}, {"api"}} {
		cmd := exec.Command("bash", append([]string{"sam.sh"}, args...)...)
		cmd.Env = append(os.Environ(), "SAM_ENV="+filepath.Join(t.TempDir(), "none.json"))
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "make sam-env") {
			t.Errorf("sam.sh %v without an env file: %v %s", args, err, out)
		}
	}
}

// TestSamEnvHasEveryVariable writes the env file from outputs shaped like
// the synthesized template's and checks every function has a value for
// every variable it declares; without an output the file is refused,
// naming the variable (negative control).
func TestSamEnvHasEveryVariable(t *testing.T) {
	tplPath := filepath.Join("..", "infra", "cdk.out", "bulkfhir.template.json")
	raw, err := os.ReadFile(tplPath)
	if err != nil {
		t.Fatalf("run make synth first: %v", err)
	}
	var tpl struct {
		Resources map[string]struct {
			Type       string
			Properties struct {
				Description any
				Environment struct{ Variables map[string]any }
			}
		}
		Outputs map[string]any
	}
	if err := json.Unmarshal(raw, &tpl); err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{}
	for name := range tpl.Outputs {
		outputs[name] = "value-of-" + name
	}
	write := func(drop string) (map[string]map[string]string, string, error) {
		o := map[string]string{}
		for k, v := range outputs {
			if k != drop {
				o[k] = v
			}
		}
		dir := t.TempDir()
		b, _ := json.Marshal(map[string]any{"bulkfhir": o})
		os.WriteFile(filepath.Join(dir, "outputs.json"), b, 0o644)
		cmd := exec.Command("bash", "sam.sh", "env")
		cmd.Env = append(os.Environ(), "OUTPUTS="+filepath.Join(dir, "outputs.json"), "SAM_ENV="+filepath.Join(dir, "env.json"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			return nil, string(out), err
		}
		var env map[string]map[string]string
		b, _ = os.ReadFile(filepath.Join(dir, "env.json"))
		return env, string(out), json.Unmarshal(b, &env)
	}
	env, out, err := write("")
	if err != nil {
		t.Fatalf("sam.sh env: %v %s", err, out)
	}
	fns := 0
	for id, r := range tpl.Resources {
		if d, _ := r.Properties.Description.(string); r.Type != "AWS::Lambda::Function" || !strings.HasPrefix(d, "bulkfhir ") {
			continue
		}
		fns++
		for k, v := range r.Properties.Environment.Variables {
			got, ok := env[id][k]
			if !ok {
				t.Errorf("%s: no value for %s", id, k)
			}
			if _, literal := v.(string); !literal && !strings.HasPrefix(got, "value-of-") {
				t.Errorf("%s.%s = %q, want it from a stack output", id, k, got)
			}
		}
	}
	if fns < 6 || len(env) != fns {
		t.Errorf("%d functions in the template, %d in the env file", fns, len(env))
	}
	if _, out, err := write("JobsTable"); err == nil || !strings.Contains(out, "BULKFHIR_TABLE") {
		t.Errorf("without the JobsTable output: %v %s", err, out)
	}
}

// TestHealthCheckNamesDisabledServices: up.sh's reading of
// /_localstack/health names every needed service that is not enabled.
func TestHealthCheckNamesDisabledServices(t *testing.T) {
	for _, tc := range []struct{ health, want string }{
		{`{"services":{"s3":"running","lambda":"available","events":"available"}}`, ""},
		{`{"services":{"s3":"running","lambda":"disabled"}}`, "lambda (disabled), events (not listed)"},
	} {
		out, err := bashLib(t, "disabled_services s3,lambda,events <<<'"+tc.health+"'")
		if err != nil || out != tc.want {
			t.Errorf("health %s: %q %v, want %q", tc.health, out, err, tc.want)
		}
	}
	if _, err := bashLib(t, "disabled_services s3 <<<'not json'"); err == nil {
		t.Error("a health answer that is not JSON passed")
	}
}
