// The JS client against a real `runledger serve` (binary from RUNLEDGER_BIN, default
// target/debug/runledger from the repository root), driving a small coworker-like engine.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';

import { attach, RunLedgerClient, newId, snapshot } from '../runledger.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..', '..');
const BIN = process.env.RUNLEDGER_BIN || join(root, 'target', 'debug', 'runledger');

/** Per-test time limit, ms. */
const T = 60_000;
const dirs = [];
const servers = new Set();

function tempDb() {
  const d = mkdtempSync(join(tmpdir(), 'runledger-js-'));
  dirs.push(d);
  return join(d, 'ledger.db');
}

function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Starts `runledger serve` and resolves once it listens. */
function startServer(db, port) {
  return new Promise((res, rej) => {
    const env = { ...process.env };
    delete env.RUNLEDGER_DB;
    const child = spawn(BIN, ['--db', db, 'serve', '--addr', `127.0.0.1:${port}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env,
    });
    servers.add(child);
    let log = '';
    const timer = setTimeout(() => rej(new Error(`serve did not start: ${log}`)), 30_000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d) => {
      log += d;
      const m = /listening on (http:\/\/\S+)/.exec(log);
      if (m && timer) {
        clearTimeout(timer);
        res({ child, url: m[1], stop: () => stopServer(child) });
      }
    });
    child.on('error', (e) => { clearTimeout(timer); rej(e); });
    child.on('exit', (code) => {
      servers.delete(child);
      clearTimeout(timer);
      rej(new Error(`serve exited ${code}: ${log}`));
    });
  });
}

function stopServer(child) {
  return new Promise((res) => {
    if (child.exitCode !== null) return res(child.exitCode);
    child.once('exit', (code) => res(code));
    child.kill('SIGTERM');
  });
}

async function getJson(url) {
  const r = await fetch(url);
  const text = await r.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`GET ${url}: ${r.status}, not JSON: ${text.slice(0, 300)}`);
  }
  return { status: r.status, body };
}

/** A small coworker-like engine: one `run(config)` entry that emits before/after/error. */
class MiniCoworker {
  constructor({ eventTarget = false } = {}) {
    this.handlers = new Map();
    this.target = eventTarget ? new EventTarget() : null;
    this.ops = new Map();
    if (this.target) {
      this.addEventListener = (n, h) => this.target.addEventListener(n, h);
      this.removeEventListener = (n, h) => this.target.removeEventListener(n, h);
    } else {
      this.on = (name, h) => {
        if (!this.handlers.has(name)) this.handlers.set(name, new Set());
        this.handlers.get(name).add(h);
      };
      this.off = (name, h) => this.handlers.get(name)?.delete(h);
    }
  }

  emit(name, ctx, err) {
    if (this.target) {
      this.target.dispatchEvent(new CustomEvent(name, { detail: ctx }));
      return;
    }
    for (const h of this.handlers.get(name) || []) h(ctx, err);
  }

  register(operation, fn) {
    this.ops.set(operation, fn);
  }

  async run(config) {
    const ctx = {
      id: config.id || `run-${newId()}`,
      operation: config.operation,
      doctype: config.doctype,
      template: config.template,
      input: config.input ?? {},
      options: { parentRunId: config.parentRunId, chainId: config.chainId },
      owner: 'alice',
      agent: 'mini',
      timestamp: Date.now(),
      status: 'pending',
      secretHandle: () => 'functions are dropped',
    };
    ctx.self = ctx; // a cycle, as live context objects often have
    this.emit('coworker:before:run', ctx);
    try {
      const fn = this.ops.get(config.operation);
      ctx.output = fn ? await fn(ctx, config) : null;
      ctx.status = 'completed';
      ctx.duration = Date.now() - ctx.timestamp;
      this.emit('coworker:after:run', ctx);
      return ctx;
    } catch (err) {
      ctx.status = 'failed';
      ctx.error = { message: err.message, code: 'E_STEP' };
      ctx.duration = Date.now() - ctx.timestamp;
      this.emit('coworker:error:run', ctx, err);
      return ctx;
    }
  }
}

/** A workflow engine: each step is a nested run that creates a Task record. */
function workflowEngine(opts, ledgerRef) {
  const cw = new MiniCoworker(opts);
  cw.register('create', async (ctx, config) => {
    if (config.fail) throw new Error('step failed on purpose');
    const name = config.input.name;
    ledgerRef.ledger.record({
      type: 'doc.created', run_id: ctx.id, doctype: 'Task', name,
      data: { subject: config.input.subject, status: 'Open' },
    });
    ledgerRef.ledger.record({
      type: 'run.progress', run_id: ctx.id, path: 'output.text', op: 'append', value: `made ${name}`,
    });
    return { data: [{ name }] };
  });
  cw.register('workflow', async (ctx, config) => {
    const outs = [];
    for (const [i, step] of config.steps.entries()) {
      const r = await cw.run({
        operation: 'create', doctype: 'Task', parentRunId: ctx.id, chainId: ctx.id,
        input: step, fail: step.fail,
      });
      outs.push({ step: i, status: r.status });
    }
    return { steps: outs };
  });
  return cw;
}

let server;
let db;

before(async () => {
  assert.ok(existsSync(BIN), `runledger binary not found at ${BIN} (set RUNLEDGER_BIN)`);
  db = tempDb();
  // Port 0: the server takes a port the kernel hands it and says which; a port picked here
  // and passed on could be taken by another process in between.
  server = await startServer(db, 0);
});

after(async () => {
  for (const c of servers) await stopServer(c);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

for (const eventTarget of [false, true]) {
  test(`a workflow's tree and provenance (${eventTarget ? 'EventTarget' : 'on()'} engine)`, { timeout: T }, async () => {
    const errors = [];
    const ref = {};
    const cw = workflowEngine({ eventTarget }, ref);
    ref.ledger = attach(cw, {
      url: server.url, batchSize: 5, flushInterval: 20, onError: (e, c) => errors.push([e, c]),
    });
    const tag = eventTarget ? 'ET' : 'ON';
    const wf = await cw.run({
      operation: 'workflow',
      template: 'WT-email-to-tasks',
      steps: [
        { name: `Task-${tag}-1`, subject: 'Follow up' },
        { name: `Task-${tag}-2`, subject: 'Call back' },
        { name: `Task-${tag}-3`, subject: 'Broken', fail: true },
      ],
    });
    await ref.ledger.flush();
    const rejects = errors.filter(([, c]) => c && c.rejected);
    assert.deepEqual(rejects, [], 'nothing rejected');

    const tree = await getJson(`${server.url}/v1/runs/${wf.id}/tree`);
    assert.equal(tree.status, 200, JSON.stringify(tree.body));
    assert.equal(tree.body.operation, 'workflow');
    assert.equal(tree.body.status, 'completed');
    assert.equal(tree.body.children.length, 3);
    const statuses = tree.body.children.map((c) => c.status).sort();
    assert.deepEqual(statuses, ['completed', 'completed', 'failed']);

    const trace = await getJson(`${server.url}/v1/docs/Task/Task-${tag}-1/trace`);
    assert.equal(trace.status, 200, JSON.stringify(trace.body));
    assert.equal(trace.body.created_by.root_run, wf.id);
    assert.equal(trace.body.created_by.template, 'WT-email-to-tasks');
    assert.equal(trace.body.created_by.lineage.at(-1).run_id, wf.id);

    const failed = tree.body.children.find((c) => c.status === 'failed');
    const show = await getJson(`${server.url}/v1/runs/${failed.run_id}`);
    assert.equal(show.body.error.message, 'step failed on purpose');

    const untraced = await getJson(`${server.url}/v1/docs/Task/Task-${tag}-3/trace`);
    assert.equal(untraced.status, 404);
    await ref.ledger.close();
  });
}

test('the engine never sees an error, even with the server unreachable', { timeout: T }, async () => {
  const errors = [];
  const port = await freePort(); // nothing listens there
  const cw = new MiniCoworker();
  const client = attach(cw, {
    url: `http://127.0.0.1:${port}`, maxRetries: 2, retryBase: 5, flushInterval: 5,
    onError: (e) => { errors.push(e); throw new Error('a throwing onError is contained too'); },
  });
  const r = await cw.run({ operation: 'select' });
  assert.equal(r.status, 'completed');
  assert.equal(client.record(null), undefined);
  await client.flush();
  assert.ok(errors.length > 0);
  assert.equal(client.stats.dropped, 2);
  client.detach();
});

test('a batch retried while the server is down is stored once when it comes up', { timeout: T }, async () => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const retries = [];
  const client = new RunLedgerClient({
    url, batchSize: 1000, flushInterval: 10_000, retryBase: 50, retryMax: 200, maxRetries: 100,
    onError: (e, c) => { if (c && c.retrying) retries.push(c.attempt); },
  });
  const run = `retry-${newId()}`;
  client.record({ type: 'run.started', run_id: run, run: { operation: 'workflow' } });
  for (let i = 0; i < 20; i += 1) {
    client.record({ type: 'run.progress', run_id: run, path: 'output.n', value: i });
  }
  const done = client.flush();
  const waitStart = Date.now();
  while (retries.length < 2) {
    assert.ok(Date.now() - waitStart < 20_000, `no retries seen: ${JSON.stringify(client.stats)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const srv = await startServer(tempDb(), port);
  await done;
  assert.equal(client.stats.accepted, 21);
  const evs = await getJson(`${url}/v1/runs/${run}/events`);
  assert.equal(evs.body.length, 21);
  await srv.stop();
});

test('a retry after a lost acknowledgement is answered as duplicates', { timeout: T }, async () => {
  let calls = 0;
  const flaky = async (u, init) => {
    const res = await fetch(u, init);
    calls += 1;
    if (calls === 1) {
      await res.arrayBuffer();
      throw new Error('connection reset before the answer arrived');
    }
    return res;
  };
  const client = new RunLedgerClient({
    url: server.url, fetch: flaky, retryBase: 10, batchSize: 100, flushInterval: 10_000,
  });
  const run = `dedup-${newId()}`;
  client.record({ type: 'run.started', run_id: run, run: { operation: 'select' } });
  for (let i = 0; i < 9; i += 1) {
    client.record({ type: 'run.progress', run_id: run, path: 'output.n', value: i });
  }
  await client.flush();
  assert.equal(calls, 2);
  assert.equal(client.stats.retries, 1);
  assert.equal(client.stats.duplicates, 10, 'the retry reused the same ids');
  assert.equal(client.stats.accepted, 0);
  const evs = await getJson(`${server.url}/v1/runs/${run}/events`);
  assert.equal(evs.body.length, 10, 'stored once');
});

test('snapshot makes context objects JSON-safe', () => {
  const o = { a: 1, f() {}, big: 10n, err: new Error('boom') };
  o.me = o;
  const s = snapshot(o);
  assert.deepEqual(Object.keys(s).sort(), ['a', 'big', 'err']);
  assert.equal(s.big, '10');
  assert.equal(s.err.message, 'boom');
});
