package lambdaenv

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/bulkfhir/bulkfhir/shared/joblog"
)

// Env is a configured function: what main passes to lambda.Start.
type Env struct {
	Config Config
	AWS    aws.Config
	Log    *slog.Logger
	Deps   *Deps
}

// exitOnError logs a cold-start failure and exits (Lambda reports the init
// failure); nil does nothing.
func exitOnError(log *slog.Logger, msg string, err error) {
	if err != nil {
		log.Error(msg, "err", err)
		os.Exit(1)
	}
}

// MustSetup configures a function at cold start, or logs every problem and
// exits (Lambda reports the init failure).
func MustSetup(role Role) *Env {
	// Every line written during a job's step carries its "job" field.
	log := slog.New(joblog.NewHandler(lambdacontext.NewLogger().Handler()))
	cfg, err := Load(os.Getenv, role)
	exitOnError(log, "startup", err)
	awsCfg, err := config.LoadDefaultConfig(context.Background())
	exitOnError(log, "startup: AWS config", err)
	env, err := Setup(cfg, awsCfg, log)
	exitOnError(log, "startup", err)
	return env
}

// Setup builds a function's adapters from a loaded configuration.
func Setup(cfg Config, awsCfg aws.Config, log *slog.Logger) (*Env, error) {
	deps, err := Build(cfg, awsCfg, log)
	if err != nil {
		return nil, err
	}
	return &Env{Config: cfg, AWS: awsCfg, Log: log, Deps: deps}, nil
}

// APIHandler is the handler of the kickoff and status functions: the HTTP
// API behind API Gateway, either API type (HTTP API payload 2.0, REST API
// proxy events).
func (e *Env) APIHandler() func(context.Context, json.RawMessage) (any, error) {
	return NewGateway(e.Deps.Handler(e.Config, e.AWS, e.Log)).Invoke
}
