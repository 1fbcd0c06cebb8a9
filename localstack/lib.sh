#!/usr/bin/env bash
# Shared by the LocalStack scripts: paths, and the checks that say clearly
# what is missing.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUTPUTS="$HERE/.outputs.json"
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://localhost.localstack.cloud:4566}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}" AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

die() { echo "localstack: $*" >&2; exit 1; }

# require_docker fails unless a Docker engine answers (a client alone is not
# enough: LocalStack and its Lambda containers need the engine).
require_docker() {
  command -v docker >/dev/null 2>&1 || die "Docker is not installed: LocalStack runs in Docker. Install Docker, or use the embedded server (make demo) and the emulator tests (make test), which need none."
  docker info >/dev/null 2>&1 || die "no Docker engine is reachable (docker info failed): start Docker first. On machines without Docker use make demo and make test instead."
  docker compose version >/dev/null 2>&1 || die "docker compose is not available: install the Docker Compose plugin."
}

# api_url prints the FHIR base URL from a CDK outputs file.
api_url() {
  local file="${1:-$OUTPUTS}"
  [ -f "$file" ] || die "no stack outputs at $file: run make localstack-deploy first"
  node -e '
    const o = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const stack = Object.values(o).find(s => s && s.FhirBaseUrl);
    if (!stack) { console.error("localstack: no FhirBaseUrl output in " + process.argv[1]); process.exit(1); }
    console.log(stack.FhirBaseUrl.replace(/\/$/, ""));
  ' "$file"
}

# output prints another stack output by name.
output() {
  node -e '
    const o = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const stack = Object.values(o).find(s => s && s[process.argv[2]]);
    if (!stack) { console.error("localstack: no " + process.argv[2] + " output"); process.exit(1); }
    console.log(stack[process.argv[2]]);
  ' "$OUTPUTS" "$1"
}
