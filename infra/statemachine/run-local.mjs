// Runs a state machine definition with aws-local-stepfunctions and prints
// the execution's result as one JSON line on stdout. Used by the Go tests
// (through the fake Step Functions endpoint) so the ASL file the stack
// deploys is the one that runs.
//
//   node run-local.mjs DEFINITION.json 'INPUT-JSON'
//
// Task states call Lambda through the AWS SDK, which honours
// AWS_ENDPOINT_URL_LAMBDA. Retry pauses are shortened to
// BULKFHIR_RETRY_MS milliseconds when it is set. On failure it prints
// {"error": ..., "cause": ...} and exits 1.

// Node 20 lacks Promise.withResolvers, which the runner uses.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}

import { readFileSync } from 'node:fs';
const { StateMachine } = await import('aws-local-stepfunctions');

const [defPath, inputJSON] = process.argv.slice(2);
const definition = JSON.parse(readFileSync(defPath, 'utf8'));
const input = JSON.parse(inputJSON ?? '{}');

// Every state with a Retry field gets the shortened pause.
const retryIntervalOverrides = {};
const ms = process.env.BULKFHIR_RETRY_MS;
if (ms !== undefined) {
  const walk = (states) => {
    for (const [name, st] of Object.entries(states ?? {})) {
      if (st.Retry) retryIntervalOverrides[name] = Number(ms);
      walk(st.ItemProcessor?.States ?? st.Iterator?.States);
      for (const b of st.Branches ?? []) walk(b.States);
    }
  };
  walk(definition.States);
}

// Credentials and region come from the SDK's default chain (the
// environment), like AWS_ENDPOINT_URL_LAMBDA.
const sm = new StateMachine(definition);
const execution = sm.run(input, { overrides: { retryIntervalOverrides } });
try {
  const result = await execution.result;
  process.stdout.write(JSON.stringify(result ?? null) + '\n');
} catch (err) {
  process.stdout.write(JSON.stringify({ error: err.name ?? 'Error', cause: err.message ?? String(err) }) + '\n');
  process.exit(1);
}
