#!/usr/bin/env bash
# Starts LocalStack and waits until it is ready.
source "$(dirname "$0")/lib.sh"
require_docker
[ -n "${LOCALSTACK_AUTH_TOKEN:-}" ] || die "set LOCALSTACK_AUTH_TOKEN: the stack's HTTP API (API Gateway v2) needs the LocalStack Base plan"
docker compose -f "$HERE/docker-compose.yml" up -d
for _ in $(seq 120); do
  if curl -fsS "$AWS_ENDPOINT_URL/_localstack/health" >/dev/null 2>&1; then
    echo "LocalStack is ready at $AWS_ENDPOINT_URL"; exit 0
  fi
  sleep 1
done
die "LocalStack did not become ready; see: docker logs bulkfhir-localstack"
