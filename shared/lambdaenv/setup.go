package lambdaenv

import (
	"context"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
)

// Env is a configured function: what main passes to lambda.Start.
type Env struct {
	Config Config
	AWS    aws.Config
	Log    *slog.Logger
	Deps   *Deps
}

// MustSetup configures a function at cold start, or logs every problem and
// exits (Lambda reports the init failure).
func MustSetup(role Role) *Env {
	log := lambdacontext.NewLogger()
	cfg, err := Load(os.Getenv, role)
	if err != nil {
		log.Error("startup", "err", err)
		os.Exit(1)
	}
	awsCfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		log.Error("startup: AWS config", "err", err)
		os.Exit(1)
	}
	env, err := Setup(cfg, awsCfg, log)
	if err != nil {
		log.Error("startup", "err", err)
		os.Exit(1)
	}
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
// API behind API Gateway (HTTP API, payload format 2.0).
func (e *Env) APIHandler() func(context.Context, events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	return GatewayHandler(e.Deps.Handler(e.Config, e.AWS, e.Log))
}
