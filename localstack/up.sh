#!/usr/bin/env bash
# Starts LocalStack (the free edition for the REST API, the paid image with
# LOCALSTACK_AUTH_TOKEN for the HTTP API), waits until /_localstack/health
# answers and checks every service the stack needs is enabled.
source "$(dirname "$0")/lib.sh"
require_edition
require_docker
services="$(needed_services)"
[ -n "$services" ] || die "no SERVICES default in $HERE/docker-compose.yml"
image="$FREE_IMAGE"
[ "$API_TYPE" = http ] && image="$PRO_IMAGE"
LOCALSTACK_IMAGE="${LOCALSTACK_IMAGE:-$image}" LOCALSTACK_SERVICES="$services" \
  docker compose -f "$HERE/docker-compose.yml" up -d
for _ in $(seq 120); do
  if health="$(curl -fsS "$AWS_ENDPOINT_URL/_localstack/health" 2>/dev/null)"; then
    off="$(disabled_services "$services" <<<"$health")" || die "could not read $AWS_ENDPOINT_URL/_localstack/health"
    [ -z "$off" ] || die "LocalStack is up but services the stack needs are not enabled: $off. Check SERVICES in localstack/docker-compose.yml and the edition (apigatewayv2 needs LOCALSTACK_AUTH_TOKEN)."
    echo "LocalStack is ready at $AWS_ENDPOINT_URL (API type $API_TYPE; services: $services)"; exit 0
  fi
  sleep 1
done
die "LocalStack did not become ready; see: docker logs bulkfhir-localstack"
