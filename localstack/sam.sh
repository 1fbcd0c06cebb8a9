#!/usr/bin/env bash
# SAM CLI against the synthesized template (make synth writes it with
# unstaged assets, so SAM finds build/<function>/bootstrap).
#   sam.sh resolve FUNCTION        print the function's logical id
#   sam.sh env                     write SAM_ENV from the stack outputs
#   sam.sh invoke FUNCTION EVENT   sam local invoke it with an events/ file
#   sam.sh api                     sam local start-api
# SAM replaces every value it cannot resolve (Ref, Fn::GetAtt) with "", so
# the functions need SAM_ENV: the --env-vars file `make sam-env` writes
# from the outputs of a LocalStack (default) or deployed stack (OUTPUTS=).
source "$(dirname "$0")/lib.sh"
TEMPLATE="${TEMPLATE:-$ROOT/infra/cdk.out/${STACK:-bulkfhir}.template.json}"
SAM_ENV="${SAM_ENV:-$HERE/sam-env.json}"

resolve() {
  [ -f "$TEMPLATE" ] || die "no synthesized template at $TEMPLATE: make synth"
  node -e '
    const [tpl, fn] = process.argv.slice(1);
    const t = JSON.parse(require("fs").readFileSync(tpl, "utf8"));
    const want = fn.charAt(0).toUpperCase() + fn.slice(1);
    const hit = Object.entries(t.Resources).find(([, r]) =>
      r.Type === "AWS::Lambda::Function" && (r.Metadata || {})["aws:cdk:path"] === `${process.env.STACK || "bulkfhir"}/${want}/Resource`);
    if (!hit) { console.error(`sam: no function ${fn} in ${tpl}`); process.exit(1); }
    console.log(hit[0]);
  ' "$TEMPLATE" "$1"
}

# writeenv resolves every environment variable of every function in the
# template: literals as they are, references through the template output
# with the same value expression (table, buckets, state machine, secret),
# AWS_ENDPOINT_URL to SAM_ENDPOINT (LocalStack as seen from SAM's Docker
# containers; empty for a deployed stack). A variable it cannot resolve is
# an error naming it: SAM would run the function with "".
writeenv() {
  [ -f "$TEMPLATE" ] || die "no synthesized template at $TEMPLATE: make synth"
  local outputs="$OUTPUTS"
  [ -f "$outputs" ] || die "no stack outputs at $outputs: deploy first (make localstack-deploy, or make deploy and OUTPUTS=infra/cdk.out/outputs.json)"
  node -e '
    const fs = require("fs");
    const [tpl, outFile, dest, endpoint] = process.argv.slice(1);
    const t = JSON.parse(fs.readFileSync(tpl, "utf8"));
    const all = JSON.parse(fs.readFileSync(outFile, "utf8"));
    const values = Object.values(all).find(s => s && s.FhirBaseUrl) || {};
    const byExpr = {};
    for (const [name, o] of Object.entries(t.Outputs || {})) {
      if (values[name] !== undefined) byExpr[JSON.stringify(o.Value)] = values[name];
    }
    const env = {}, missing = [];
    for (const [id, r] of Object.entries(t.Resources)) {
      if (r.Type !== "AWS::Lambda::Function" || !String((r.Properties || {}).Description || "").startsWith("bulkfhir ")) continue;
      const vars = ((r.Properties.Environment || {}).Variables) || {};
      env[id] = {};
      for (const [k, v] of Object.entries(vars)) {
        if (k === "AWS_ENDPOINT_URL") { env[id][k] = endpoint; continue; }
        if (typeof v === "string") { env[id][k] = v; continue; }
        const hit = byExpr[JSON.stringify(v)];
        if (hit === undefined) { missing.push(`${id}.${k}`); continue; }
        env[id][k] = hit;
      }
    }
    if (missing.length) { console.error("sam: no stack output gives " + missing.join(", ")); process.exit(1); }
    fs.writeFileSync(dest, JSON.stringify(env, null, 2) + "\n");
    console.log(`wrote ${dest} (${Object.keys(env).length} functions)`);
  ' "$TEMPLATE" "$outputs" "$SAM_ENV" "${SAM_ENDPOINT-http://host.docker.internal:4566}"
}

require_sam() {
  command -v sam >/dev/null 2>&1 || die "the AWS SAM CLI is not installed (it needs Docker as well); see docs/local-testing.md"
  require_docker
}

require_env() {
  [ -f "$SAM_ENV" ] || die "no SAM environment file at $SAM_ENV: SAM would start the functions with empty BULKFHIR_TABLE, BULKFHIR_BUCKET, … Run make localstack-deploy (or make deploy) and then make sam-env first."
}

case "${1:-}" in
  resolve) resolve "${2:?function name}" ;;
  env) writeenv ;;
  invoke)
    id="$(resolve "${2:?function name, e.g. status}")"
    event="${3:?event file, e.g. events/status-get.json}"
    [ -f "$event" ] || die "no event file $event"
    require_env
    require_sam
    sam local invoke -t "$TEMPLATE" "$id" -e "$event" --env-vars "$SAM_ENV" ;;
  api)
    require_env
    require_sam
    sam local start-api -t "$TEMPLATE" --env-vars "$SAM_ENV" ;;
  *) die "usage: sam.sh resolve FN | env | invoke FN EVENT | api" ;;
esac
