// Runs state machine definitions with aws-local-stepfunctions for the Go
// tests (through their fake Step Functions endpoint), so the ASL file the
// stack deploys is the one that runs, and enforces the Step Functions
// limits the runner itself does not: 256 KiB per state input or output and
// 25,000 history events per execution. A run over a limit fails at once,
// as on AWS, and names the limit.
//
//   node run-local.mjs DEFINITION.json 'INPUT-JSON'
//     runs one execution and prints its outcome as one JSON line:
//     {"ok", "output" | "error", "cause", "events", "maxStateBytes", "limit"};
//     exits 1 unless ok.
//   node run-local.mjs --serve
//     runs many executions (the child executions of a Distributed Map):
//     reads one request per stdin line, {"id", "definition", "input"}
//     ("abort": id stops one), and writes one outcome line per request,
//     with its "id", as each ends.
//
// Task states call Lambda through the AWS SDK, which honours
// AWS_ENDPOINT_URL_LAMBDA. Retry pauses are shortened to
// BULKFHIR_RETRY_MS milliseconds when it is set.

// Node 20 lacks Promise.withResolvers, which the runner uses.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}

import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
const { StateMachine } = await import('aws-local-stepfunctions');

export const MAX_STATE_BYTES = 256 * 1024;
export const MAX_HISTORY_EVENTS = 25000;

// historyEvents is how many events Step Functions records for one event of
// the runner: a Task state adds Scheduled, Started and Succeeded/Failed per
// attempt; a Map its start and end; caught errors add none.
function historyEvents(ev) {
  switch (ev.type) {
    case 'ExecutionStarted': case 'ExecutionSucceeded': case 'ExecutionFailed':
    case 'ExecutionAborted': case 'ExecutionTimeout': case 'StateExited':
    case 'MapIterationStarted': case 'MapIterationSucceeded': case 'MapIterationFailed':
    case 'ParallelBranchStarted': case 'ParallelBranchSucceeded': case 'ParallelBranchFailed':
      return 1;
    case 'StateEntered':
      if (ev.state?.type === 'Task') return 4;
      if (ev.state?.type === 'Map' || ev.state?.type === 'Parallel') return 3;
      return 1;
    case 'StateRetried':
      return 3;
  }
  return 0;
}

function byteSize(v) {
  return v === undefined ? 0 : Buffer.byteLength(JSON.stringify(v) ?? 'null');
}

function retryOverrides(definition) {
  const out = {};
  const ms = process.env.BULKFHIR_RETRY_MS;
  if (ms === undefined) return out;
  const walk = (states) => {
    for (const [name, st] of Object.entries(states ?? {})) {
      if (st.Retry) out[name] = Number(ms);
      walk(st.ItemProcessor?.States ?? st.Iterator?.States);
      for (const b of st.Branches ?? []) walk(b.States);
    }
  };
  walk(definition.States);
  return out;
}

// Validating a definition costs more than running a small one: the
// child executions of a Map share one StateMachine per definition.
const machines = new Map();
function machine(definition) {
  const key = JSON.stringify(definition);
  let sm = machines.get(key);
  if (!sm) {
    sm = new StateMachine(definition);
    machines.set(key, sm);
  }
  return sm;
}

// run executes one definition and resolves to its outcome (never rejects).
export function run(definition, input) {
  let sm;
  try {
    sm = machine(definition);
  } catch (err) {
    return { abort: () => {}, outcome: Promise.resolve({ ok: false, error: 'States.Runtime', cause: String(err.message ?? err), events: 0, maxStateBytes: 0, limit: '' }) };
  }
  const execution = sm.run(input, { overrides: { retryIntervalOverrides: retryOverrides(definition) } });
  const stats = { events: 0, transitions: 0, maxStateBytes: byteSize(input), limit: '' };
  if (stats.maxStateBytes > MAX_STATE_BYTES) stats.limit = `execution input of ${stats.maxStateBytes} bytes is over ${MAX_STATE_BYTES}`;
  const watch = (async () => {
    for await (const ev of execution.eventLogs) {
      stats.events += historyEvents(ev);
      if (ev.type === 'StateEntered') stats.transitions++;
      if (ev.state) {
        const n = Math.max(byteSize(ev.state.input), byteSize(ev.state.output));
        if (n > stats.maxStateBytes) stats.maxStateBytes = n;
        if (n > MAX_STATE_BYTES && !stats.limit) stats.limit = `state ${ev.state.name} input or output of ${n} bytes is over ${MAX_STATE_BYTES}`;
      }
      if (stats.events > MAX_HISTORY_EVENTS && !stats.limit) stats.limit = `more than ${MAX_HISTORY_EVENTS} history events`;
      if (stats.limit) { execution.abort(); return; }
    }
  })();
  const outcome = execution.result.then(
    (output) => ({ ok: true, output: output ?? null }),
    (err) => ({ ok: false, error: err.name === 'ExecutionTimeoutError' ? 'States.Timeout' : (err.name ?? 'Error'), cause: err.message ?? String(err) }),
  );
  return {
    abort: () => execution.abort(),
    outcome: Promise.all([outcome, watch.catch(() => {})]).then(([o]) => {
      // An execution over a limit fails with States.DataLimitExceeded or
      // States.Runtime on AWS, whatever its states would have done next.
      if (stats.limit) return { ok: false, error: stats.limit.includes('history') ? 'States.Runtime' : 'States.DataLimitExceeded', cause: stats.limit, ...stats };
      return { ...o, ...stats };
    }),
  };
}

if (process.argv[2] === '--serve') {
  const running = new Map();
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (!line.trim()) return;
    const req = JSON.parse(line);
    if (req.abort !== undefined) { running.get(req.abort)?.abort(); return; }
    const r = run(req.definition, req.input);
    running.set(req.id, r);
    r.outcome.then((o) => {
      running.delete(req.id);
      process.stdout.write(JSON.stringify({ id: req.id, ...o }) + '\n');
    });
  });
  rl.on('close', () => { for (const r of running.values()) r.abort(); });
} else if (process.argv[2]) {
  const [defPath, inputJSON] = process.argv.slice(2);
  const definition = JSON.parse(readFileSync(defPath, 'utf8'));
  const o = await run(definition, JSON.parse(inputJSON ?? '{}')).outcome;
  process.stdout.write(JSON.stringify(o) + '\n');
  process.exit(o.ok ? 0 : 1);
}
