package awstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
)

// Credentials the emulators are started with.
const (
	AccessKey = "bulkfhirtest"
	SecretKey = "bulkfhirtestsecret"
	Region    = "us-east-1"
)

// ErrMissing means an emulator is not installed (run make tools).
var ErrMissing = errors.New("emulator not installed (run `make tools`)")

// RepoRoot finds the directory holding go.mod, from the working directory up.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found")
		}
		dir = parent
	}
}

// Emulator is a running emulator process.
type Emulator struct {
	Endpoint string
	cmd      *exec.Cmd
	log      *os.File
}

// Stop kills the emulator's process group.
func (e *Emulator) Stop() {
	if e == nil || e.cmd == nil || e.cmd.Process == nil {
		return
	}
	syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
	e.cmd.Wait()
	if e.log != nil {
		e.log.Close()
		os.Remove(e.log.Name())
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func start(cmd *exec.Cmd, endpoint string, ready func() bool) (*Emulator, error) {
	log, err := os.CreateTemp("", "emulator-*.log")
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	e := &Emulator{Endpoint: endpoint, cmd: cmd, log: log}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if ready() {
			return e, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, _ := os.ReadFile(log.Name())
	e.Stop()
	return nil, fmt.Errorf("%s did not become ready: %s", cmd.Path, out)
}

// StartDynamoDB starts DynamoDB Local (in memory) on a free port.
func StartDynamoDB() (*Emulator, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "infra", "node_modules", "amplify-dynamodb-simulator", "emulator")
	if _, err := os.Stat(filepath.Join(dir, "DynamoDBLocal.jar")); err != nil {
		return nil, fmt.Errorf("DynamoDB Local: %w", ErrMissing)
	}
	java, err := exec.LookPath("java")
	if err != nil {
		return nil, fmt.Errorf("DynamoDB Local needs java: %w", ErrMissing)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(java, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xmx256m",
		"-Djava.library.path=./DynamoDBLocal_lib", "-jar", "DynamoDBLocal.jar",
		"-inMemory", "-disableTelemetry", "-port", fmt.Sprint(port))
	cmd.Dir = dir
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	return start(cmd, endpoint, func() bool {
		resp, err := http.Post(endpoint, "application/x-amz-json-1.0", nil)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
}

// StartMinIO starts MinIO on a free port with a temporary data directory.
func StartMinIO() (*Emulator, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(root, ".cache", "bin", "minio")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("MinIO: %w", ErrMissing)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	data, err := os.MkdirTemp("", "minio-data-")
	if err != nil {
		return nil, err
	}
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd := exec.Command(bin, "server", data, "--address", fmt.Sprintf("127.0.0.1:%d", port), "--quiet")
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+AccessKey, "MINIO_ROOT_PASSWORD="+SecretKey, "MINIO_BROWSER=off")
	e, err := start(cmd, endpoint, func() bool {
		resp, err := http.Get(endpoint + "/minio/health/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if err != nil {
		os.RemoveAll(data)
	}
	return e, err
}

// Config is an AWS config for the emulators (static credentials, region).
// Endpoints come from AWS_ENDPOINT_URL_* as in production.
func Config(ctx context.Context) (aws.Config, error) {
	return config.LoadDefaultConfig(ctx, config.WithRegion(Region),
		config.WithCredentialsProvider(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: AccessKey, SecretAccessKey: SecretKey, Source: "awstest"}, nil
		})))
}
