// Package localstack_test checks what can be checked of the LocalStack and
// SAM workflows without Docker: the compose file, the scripts' syntax, the
// API URL derived from stack outputs, function ids resolved from the
// synthesized template, and a clear failure when Docker is missing.
package localstack_test

import (
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
	if !strings.HasPrefix(ls.Image, "localstack/localstack-pro:") || strings.HasSuffix(ls.Image, ":latest") {
		t.Errorf("image %q: want a pinned localstack-pro tag (HTTP APIs need it)", ls.Image)
	}
	if len(ls.Ports) != 1 || ls.Ports[0] != "127.0.0.1:4566:4566" {
		t.Errorf("ports = %v, want LocalStack's edge port on loopback only", ls.Ports)
	}
	services := ls.Environment["SERVICES"]
	for _, svc := range []string{"apigateway", "cloudformation", "dynamodb", "iam", "lambda", "logs", "s3", "stepfunctions", "sts"} {
		if !strings.Contains(","+services+",", ","+svc+",") {
			t.Errorf("SERVICES lacks %s: %q", svc, services)
		}
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
	out, err := exec.Command("bash", "sam.sh", "invoke", "status", "../events/status-get.json").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "SAM CLI") && !strings.Contains(string(out), "Docker") {
		t.Errorf("sam invoke without SAM: %v %s", err, out)
	}
}
