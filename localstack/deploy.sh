#!/usr/bin/env bash
# Deploys the CDK stack to the running LocalStack with cdklocal (pinned in
# infra/package.json) and writes the stack outputs to localstack/.outputs.json.
source "$(dirname "$0")/lib.sh"
require_docker
curl -fsS "$AWS_ENDPOINT_URL/_localstack/health" >/dev/null 2>&1 || die "LocalStack is not running: make localstack-up"
cd "$ROOT/infra"
CDKLOCAL=node_modules/.bin/cdklocal
[ -x "$CDKLOCAL" ] || die "cdklocal is not installed: make tools"
export CDK_DEFAULT_ACCOUNT=000000000000 CDK_DEFAULT_REGION="$AWS_REGION"
"$CDKLOCAL" bootstrap --no-notices "aws://000000000000/$AWS_REGION"
"$CDKLOCAL" deploy --no-notices --require-approval never --outputs-file "$OUTPUTS" "${STACK:-bulkfhir}"
echo "FHIR base URL: $(api_url)"
