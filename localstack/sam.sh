#!/usr/bin/env bash
# SAM CLI against the synthesized template (make synth writes it with
# unstaged assets, so SAM finds build/<function>/bootstrap).
#   sam.sh resolve FUNCTION        print the function's logical id
#   sam.sh invoke FUNCTION EVENT   sam local invoke it with an events/ file
#   sam.sh api                     sam local start-api
# SAM_ENV may name a --env-vars JSON file (table, bucket and endpoints of a
# deployed or LocalStack stack).
source "$(dirname "$0")/lib.sh"
TEMPLATE="${TEMPLATE:-$ROOT/infra/cdk.out/${STACK:-bulkfhir}.template.json}"

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

require_sam() {
  command -v sam >/dev/null 2>&1 || die "the AWS SAM CLI is not installed (it needs Docker as well); see the README's SAM section"
  require_docker
}

envargs=()
[ -n "${SAM_ENV:-}" ] && envargs=(--env-vars "$SAM_ENV")
case "${1:-}" in
  resolve) resolve "${2:?function name}" ;;
  invoke)
    id="$(resolve "${2:?function name, e.g. status}")"
    event="${3:?event file, e.g. events/status-get.json}"
    [ -f "$event" ] || die "no event file $event"
    require_sam
    sam local invoke -t "$TEMPLATE" "$id" -e "$event" "${envargs[@]}" ;;
  api)
    require_sam
    sam local start-api -t "$TEMPLATE" "${envargs[@]}" ;;
  *) die "usage: sam.sh resolve FN | invoke FN EVENT | api" ;;
esac
