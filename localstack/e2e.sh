#!/usr/bin/env bash
# Uploads the sample data to the deployed stack's source bucket, registers a
# client, runs a system export with bulkfhir export (logged in) against the
# stack's API and checks the counts against the data.
source "$(dirname "$0")/lib.sh"
require_docker
url="$(api_url)"
data="${DATA:-$ROOT/data}"
out="${OUT:-$ROOT/out-localstack}"
[ -f "$data/Patient.ndjson" ] || die "no sample data in $data: make data"
cd "$ROOT"
go run ./localstack/upload --bucket "$(output SourceBucket)" --dir "$data"
rm -rf "$out"
# The stack requires bulkfhir's tokens: register a throwaway client in its auth table.
keydir="$(mktemp -d)"; trap 'rm -rf "$keydir"' EXIT
./bin/bulkfhir clients add --table "$(output AuthTableName)" --client-id localstack-e2e --new-key "$keydir/key.pem" --scope 'system/*.read'
./bin/bulkfhir export --server "$url" --client-id localstack-e2e --key "$keydir/key.pem" --out "$out"
./bin/bulkfhir verify --data "$data" --out "$out"
