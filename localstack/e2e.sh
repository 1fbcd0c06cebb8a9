#!/usr/bin/env bash
# Uploads the sample data to the deployed stack's source bucket, runs a
# system export with bulkfhir export against the stack's API and checks the
# counts against the data.
source "$(dirname "$0")/lib.sh"
require_docker
url="$(api_url)"
data="${DATA:-$ROOT/data}"
out="${OUT:-$ROOT/out-localstack}"
[ -f "$data/Patient.ndjson" ] || die "no sample data in $data: make data"
cd "$ROOT"
go run ./localstack/upload --bucket "$(output SourceBucket)" --dir "$data"
rm -rf "$out"
./bin/bulkfhir export --server "$url" --out "$out"
./bin/bulkfhir verify --data "$data" --out "$out"
