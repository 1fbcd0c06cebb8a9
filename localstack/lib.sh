#!/usr/bin/env bash
# Shared by the LocalStack scripts: paths, and the checks that say clearly
# what is missing.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUTPUTS="${OUTPUTS:-$HERE/.outputs.json}"
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://localhost.localstack.cloud:4566}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}" AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

die() { echo "localstack: $*" >&2; exit 1; }

# The API type (rest: free edition; http: needs LOCALSTACK_AUTH_TOKEN) and
# the images of both editions.
API_TYPE="${API_TYPE:-rest}"
FREE_IMAGE="localstack/localstack:4.14"
PRO_IMAGE="${LOCALSTACK_PRO_IMAGE:-localstack/localstack-pro:4.14}"

# compose_services prints the SERVICES default of docker-compose.yml.
compose_services() {
  sed -n 's/.*SERVICES: ${LOCALSTACK_SERVICES:-\([a-z0-9,]*\)}.*/\1/p' "$HERE/docker-compose.yml"
}

# needed_services prints the services the stack needs for API_TYPE.
needed_services() {
  case "$API_TYPE" in
    rest) compose_services ;;
    http) echo "$(compose_services),apigatewayv2" ;;
    *) die "API_TYPE must be rest or http, not $API_TYPE" ;;
  esac
}

# require_edition refuses the HTTP API without a LocalStack auth token.
require_edition() {
  if [ "$API_TYPE" = http ] && [ -z "${LOCALSTACK_AUTH_TOKEN:-}" ]; then
    die "the HTTP API (API Gateway v2) needs a paid LocalStack plan: set LOCALSTACK_AUTH_TOKEN, or use the free edition's REST API (LOCALSTACK_API_TYPE=rest, the default)"
  fi
}

# disabled_services reads a /_localstack/health document on stdin and
# prints the needed services (comma-separated in $1) it does not list as
# available or running.
disabled_services() {
  node -e '
    let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
      let h; try { h = JSON.parse(s); } catch (e) { console.error("localstack: /_localstack/health is not JSON"); process.exit(2); }
      const st = h.services || {};
      const off = process.argv[1].split(",").filter(x => x && !["available", "running"].includes(st[x]));
      console.log(off.map(x => x + " (" + (st[x] || "not listed") + ")").join(", "));
    });
  ' "$1"
}

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
    // LocalStack reports REST API URLs with the AWS domain; its own
    // gateway answers them under execute-api.localhost.localstack.cloud.
    const url = stack.FhirBaseUrl.replace(/\/$/, "").replace(
      /^https:\/\/([a-z0-9]+)\.execute-api\.[a-z0-9-]+\.amazonaws\.com(\/.*)$/,
      "http://$1.execute-api.localhost.localstack.cloud:4566$2");
    console.log(url);
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
