#!/usr/bin/env bash
# Stops LocalStack and removes its state.
source "$(dirname "$0")/lib.sh"
require_docker
docker compose -f "$HERE/docker-compose.yml" down --volumes
rm -rf "$HERE/.volume" "$OUTPUTS"
