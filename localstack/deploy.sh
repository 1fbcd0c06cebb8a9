#!/usr/bin/env bash
# Deploys the CDK stack to the running LocalStack with cdklocal (pinned in
# infra/package.json) and writes the stack outputs to localstack/.outputs.json.
# API_TYPE (rest by default: the free edition) and ARCH (the host's, from
# the Makefile) choose the stack's API and the functions' architecture.
source "$(dirname "$0")/lib.sh"
require_edition
require_docker
ARCH="${ARCH:-$(case "$(uname -m)" in aarch64|arm64) echo arm64 ;; *) echo x86_64 ;; esac)}"
curl -fsS "$AWS_ENDPOINT_URL/_localstack/health" >/dev/null 2>&1 || die "LocalStack is not running: make localstack-up"
built="$(cat "$ROOT/build/ARCH" 2>/dev/null || true)"
[ "$built" = "$ARCH" ] || die "build/ holds ${built:-no} functions, not $ARCH ones: make lambdas ARCH=$ARCH (make localstack-deploy does it)"
cd "$ROOT/infra"
CDKLOCAL=node_modules/.bin/cdklocal
[ -x "$CDKLOCAL" ] || die "cdklocal is not installed: make tools"
export CDK_DEFAULT_ACCOUNT=000000000000 CDK_DEFAULT_REGION="$AWS_REGION"
ctx=(-c "bulkfhir:apiType=$API_TYPE" -c "bulkfhir:architecture=$ARCH")
"$CDKLOCAL" bootstrap --no-notices "${ctx[@]}" "aws://000000000000/$AWS_REGION"
"$CDKLOCAL" deploy --no-notices --require-approval never "${ctx[@]}" --outputs-file "$OUTPUTS" "${STACK:-bulkfhir}"
echo "FHIR base URL: $(api_url)"
