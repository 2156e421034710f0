// runledger client: forwards coworker run checkpoints and record changes to `runledger serve`.
//
// Dependency-free ES module for browsers and Node 20+.
//
//   import { attach } from './runledger.mjs';
//   const ledger = attach(coworker, { url: 'http://127.0.0.1:7070', token: 'TOKEN' });
//   ledger.record({ type: 'doc.created', run_id: ctx.id, doctype: 'Task', name, data });
//
// Events are queued, sent in batches (by count and by interval) to POST /v1/events, and
// retried with exponential backoff under the same event ids, so a retried batch is answered
// as duplicates instead of being stored twice. Nothing here ever throws into the engine or
// blocks it: every failure goes to the optional `onError` callback.

const HOOKS = {
  before: 'coworker:before:run',
  after: 'coworker:after:run',
  error: 'coworker:error:run',
};

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

/** Defaults of {@link RunLedgerClient} options. */
export const DEFAULTS = Object.freeze({
  url: 'http://127.0.0.1:7070',
  token: undefined,
  batchSize: 200, // send when this many events are queued
  flushInterval: 500, // ms: send what is queued at least this often
  maxQueue: 100_000, // events kept while the server is unreachable; older ones are dropped
  maxRetries: 10, // attempts of one batch before it is dropped (Infinity: never drop)
  retryBase: 250, // ms: first backoff, doubled per attempt
  retryMax: 30_000, // ms: longest backoff
  requestTimeout: 15_000, // ms
  unloadFlush: true, // browsers: send what is left on pagehide / visibilitychange:hidden
  onError: undefined, // (error, context) => void
  fetch: undefined, // a fetch implementation (default: globalThis.fetch)
});

let counter = 0;
const prefix = randomHex(8);

/** A unique event id (random UUID where available). */
export function newId() {
  try {
    if (globalThis.crypto && typeof globalThis.crypto.randomUUID === 'function') {
      return globalThis.crypto.randomUUID();
    }
  } catch {
    // fall through
  }
  counter += 1;
  return `${prefix}-${Date.now().toString(36)}-${counter.toString(36)}-${randomHex(6)}`;
}

function randomHex(n) {
  let s = '';
  for (let i = 0; i < n; i += 1) s += Math.floor(Math.random() * 16).toString(16);
  return s;
}

/** A JSON-safe deep copy: drops functions and symbols, breaks cycles, turns errors into
 * `{message, name, code, stack}` and BigInts into strings. */
export function snapshot(value) {
  const seen = new WeakSet();
  const text = JSON.stringify(value, function replacer(key, v) {
    if (typeof v === 'bigint') return v.toString();
    if (typeof v === 'function' || typeof v === 'symbol') return undefined;
    if (v instanceof Error) return errorObject(v);
    if (v !== null && typeof v === 'object') {
      if (seen.has(v)) return undefined;
      seen.add(v);
    }
    return v;
  });
  return text === undefined ? null : JSON.parse(text);
}

function errorObject(e) {
  if (e == null) return { message: 'unknown error' };
  if (typeof e === 'string') return { message: e };
  if (typeof e !== 'object') return { message: String(e) };
  const out = { message: typeof e.message === 'string' ? e.message : String(e) };
  if (e.name && e.name !== 'Error') out.name = String(e.name);
  if (e.code !== undefined) out.code = String(e.code);
  if (typeof e.stack === 'string') out.stack = e.stack;
  return out;
}

/** The context object carried by a hook call: a CustomEvent's `detail`, else the argument. */
function contextOf(arg) {
  if (arg && typeof arg === 'object' && 'detail' in arg && typeof arg.type === 'string'
      && typeof arg.preventDefault === 'function') {
    return arg.detail;
  }
  return arg;
}

function sleep(ms, unref) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (unref && t && typeof t.unref === 'function') t.unref();
  });
}

/** Queues events and sends them to a runledger server. */
export class RunLedgerClient {
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.endpoint = `${String(this.options.url).replace(/\/+$/, '')}/v1/events`;
    this.queue = [];
    this.inflight = null; // the batch being sent (kept for retries)
    this.pumping = null; // promise of the running send loop
    this.timer = null;
    this.closed = false;
    this.stats = {
      queued: 0, sent: 0, accepted: 0, duplicates: 0, rejected: 0,
      retries: 0, dropped: 0, requests: 0,
    };
    this.runIds = new WeakMap(); // context objects without an id
    this.detachers = [];
    this._installUnload();
  }

  /** Queues one event (`doc.*`, `run.progress`, `run.waiting`, `run.resumed`, …); adds `id`
   * and `ts` when missing. Returns the event id, or undefined when it could not be queued. */
  record(event) {
    try {
      if (this.closed) throw new Error('the runledger client is closed');
      if (!event || typeof event !== 'object' || typeof event.type !== 'string') {
        throw new TypeError('record(event) needs an object with a string `type`');
      }
      const ev = snapshot(event);
      if (ev.id == null) ev.id = newId();
      if (ev.ts == null) ev.ts = Date.now();
      this._enqueue(ev);
      return ev.id;
    } catch (e) {
      this._error(e, { op: 'record', event });
      return undefined;
    }
  }

  /** Queues a `run.checkpoint` for a coworker context object. `phase`: before | after | error. */
  checkpoint(phase, context, error) {
    try {
      const ctx = contextOf(context);
      if (!ctx || typeof ctx !== 'object') throw new TypeError('a run hook got no context object');
      const run = snapshot(ctx) || {};
      if (run.id == null) {
        run.id = ctx.run_id ?? ctx.runId ?? this._runIdOf(ctx);
      }
      const now = Date.now();
      if (phase === 'before') {
        run.status = 'running';
        if (run.timestamp == null) run.timestamp = now;
      } else if (phase === 'after') {
        run.status = TERMINAL.has(run.status) ? run.status : 'completed';
      } else {
        run.status = 'failed';
        const err = error ?? ctx.error;
        run.error = errorObject(err);
      }
      if (run.status === 'failed' && run.error == null) run.error = { message: 'failed' };
      if (typeof run.error === 'string') run.error = { message: run.error };
      const ev = {
        type: 'run.checkpoint',
        id: newId(),
        ts: phase === 'before' ? run.timestamp : now,
        run,
      };
      this._enqueue(ev);
      return ev.id;
    } catch (e) {
      this._error(e, { op: 'checkpoint', phase });
      return undefined;
    }
  }

  /** Sends everything queued now; resolves (never rejects) once it is acknowledged or
   * given up on. */
  flush() {
    return this._pump().catch((e) => this._error(e, { op: 'flush' }));
  }

  /** Stops listening and the timer, then flushes. */
  async close() {
    for (const d of this.detachers.splice(0)) {
      try { d(); } catch (e) { this._error(e, { op: 'detach' }); }
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.flush();
    this.closed = true;
  }

  // --- internals -------------------------------------------------------------------------

  _runIdOf(ctx) {
    let id = this.runIds.get(ctx);
    if (!id) {
      id = newId();
      this.runIds.set(ctx, id);
    }
    return id;
  }

  _enqueue(ev) {
    this.queue.push(ev);
    this.stats.queued += 1;
    const over = this.queue.length - this.options.maxQueue;
    if (over > 0) {
      const lost = this.queue.splice(0, over);
      this.stats.dropped += lost.length;
      this._error(new Error(`queue full: dropped the ${lost.length} oldest events`),
        { op: 'enqueue', events: lost });
    }
    if (this.queue.length >= this.options.batchSize) {
      this._pump().catch((e) => this._error(e, { op: 'send' }));
    } else {
      this._arm();
    }
  }

  _arm() {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this._pump().catch((e) => this._error(e, { op: 'send' }));
    }, this.options.flushInterval);
    if (this.timer && typeof this.timer.unref === 'function') this.timer.unref();
  }

  /** Sends batches until the queue is empty; one request at a time, in order. */
  _pump() {
    if (this.pumping) {
      // A loop is running: it will pick up what was queued meanwhile.
      return this.pumping.then(() => (this.queue.length ? this._pump() : undefined));
    }
    this.pumping = (async () => {
      try {
        while (this.inflight || this.queue.length) {
          if (!this.inflight) {
            this.inflight = { events: this.queue.splice(0, this.options.batchSize), attempt: 0 };
          }
          await this._sendInflight();
        }
      } finally {
        this.pumping = null;
      }
    })();
    return this.pumping;
  }

  async _sendInflight() {
    const batch = this.inflight;
    const o = this.options;
    for (;;) {
      let outcome;
      try {
        outcome = await this._post(batch.events);
      } catch (e) {
        outcome = { retry: true, error: e };
      }
      if (!outcome.retry) {
        this.inflight = null;
        if (outcome.error) {
          this.stats.dropped += batch.events.length;
          this._error(outcome.error, { op: 'send', events: batch.events, status: outcome.status });
        }
        return;
      }
      batch.attempt += 1;
      if (batch.attempt >= o.maxRetries) {
        this.inflight = null;
        this.stats.dropped += batch.events.length;
        this._error(outcome.error, { op: 'send', events: batch.events, gaveUp: true });
        return;
      }
      this.stats.retries += 1;
      this._error(outcome.error, { op: 'send', retrying: true, attempt: batch.attempt });
      const backoff = Math.min(o.retryMax, o.retryBase * 2 ** (batch.attempt - 1));
      await sleep(backoff * (0.75 + Math.random() * 0.5), false);
    }
  }

  _headers(contentType) {
    const h = { 'Content-Type': contentType };
    if (this.options.token) h.Authorization = `Bearer ${this.options.token}`;
    return h;
  }

  /** One POST: `{retry}` for network errors, timeouts, 429 and 5xx; `{error}` for answers
   * that a retry would not change. */
  async _post(events) {
    const f = this.options.fetch || globalThis.fetch;
    if (typeof f !== 'function') return { retry: false, error: new Error('no fetch available') };
    const body = events.map((e) => JSON.stringify(e)).join('\n') + '\n';
    this.stats.requests += 1;
    let res;
    const init = { method: 'POST', headers: this._headers('application/x-ndjson'), body };
    if (typeof AbortSignal !== 'undefined' && typeof AbortSignal.timeout === 'function') {
      init.signal = AbortSignal.timeout(this.options.requestTimeout);
    }
    try {
      res = await f(this.endpoint, init);
    } catch (e) {
      return { retry: true, error: e };
    }
    const status = res.status;
    if (status === 429 || status >= 500) {
      return { retry: true, error: new Error(`runledger answered ${status}`) };
    }
    if (status === 413 && events.length > 1) {
      // Too big for the server's limit: send the halves one after the other.
      const half = Math.ceil(events.length / 2);
      const a = await this._post(events.slice(0, half));
      if (a.retry) return a;
      const b = await this._post(events.slice(half));
      return b.retry ? b : (a.error ? a : b);
    }
    let report = null;
    try { report = await res.json(); } catch { report = null; }
    if (status !== 200) {
      const why = report && report.error ? `: ${report.error}` : '';
      return { retry: false, status, error: new Error(`runledger answered ${status}${why}`) };
    }
    this.stats.sent += events.length;
    if (report) {
      this.stats.accepted += report.accepted || 0;
      this.stats.duplicates += report.duplicates || 0;
      this.stats.rejected += report.rejected || 0;
      if (report.rejected > 0) {
        const rejected = (report.errors || []).map((e) => ({ ...e, event: events[e.index] }));
        this._error(new Error(`runledger rejected ${report.rejected} events`),
          { op: 'send', rejected });
      }
    }
    return { retry: false };
  }

  _error(err, context) {
    const cb = this.options.onError;
    if (typeof cb !== 'function') return;
    try {
      cb(err instanceof Error ? err : new Error(String(err)), context);
    } catch {
      // an error handler that throws must not reach the engine either
    }
  }

  /** Browsers: on pagehide / hidden, hand what is left to fetch keepalive (or sendBeacon). */
  _installUnload() {
    if (!this.options.unloadFlush) return;
    const w = globalThis.window;
    if (!w || typeof w.addEventListener !== 'function') return;
    const onHide = () => {
      try {
        if (globalThis.document && globalThis.document.visibilityState === 'visible') return;
        this._unloadSend();
      } catch (e) {
        this._error(e, { op: 'unload' });
      }
    };
    w.addEventListener('pagehide', onHide);
    if (globalThis.document) globalThis.document.addEventListener('visibilitychange', onHide);
    this.detachers.push(() => {
      w.removeEventListener('pagehide', onHide);
      if (globalThis.document) globalThis.document.removeEventListener('visibilitychange', onHide);
    });
  }

  /** Sends every pending event in ≤ 60 KB keepalive requests (the browsers' keepalive limit
   * is 64 KB in total); the events stay queued for a normal retry should the page live on. */
  _unloadSend() {
    const events = [...(this.inflight ? this.inflight.events : []), ...this.queue];
    if (!events.length) return;
    const chunks = [];
    let cur = '';
    for (const e of events) {
      const line = JSON.stringify(e) + '\n';
      if (cur && cur.length + line.length > 60_000) {
        chunks.push(cur);
        cur = '';
      }
      cur += line;
    }
    if (cur) chunks.push(cur);
    const f = this.options.fetch || globalThis.fetch;
    for (const body of chunks) {
      let sent = false;
      if (typeof f === 'function') {
        try {
          const p = f(this.endpoint, {
            method: 'POST', keepalive: true, body,
            headers: this._headers('application/x-ndjson'),
          });
          if (p && typeof p.catch === 'function') p.catch(() => {});
          sent = true;
        } catch {
          sent = false;
        }
      }
      const nav = globalThis.navigator;
      if (!sent && !this.options.token && nav && typeof nav.sendBeacon === 'function') {
        // text/plain keeps the beacon a simple request; the server reads it as NDJSON.
        nav.sendBeacon(this.endpoint, new Blob([body], { type: 'text/plain' }));
      }
    }
  }
}

/** Subscribes `client` to a coworker's run hooks; returns a function that unsubscribes. */
function subscribe(coworker, client) {
  const off = [];
  for (const [phase, name] of Object.entries(HOOKS)) {
    const handler = (arg, maybeError) => {
      try {
        client.checkpoint(phase, arg, phase === 'error' ? maybeError : undefined);
      } catch (e) {
        client._error(e, { op: 'hook', phase });
      }
    };
    if (typeof coworker.on === 'function') {
      const r = coworker.on(name, handler);
      off.push(() => {
        if (typeof r === 'function') r();
        else if (typeof coworker.off === 'function') coworker.off(name, handler);
        else if (typeof coworker.removeListener === 'function') {
          coworker.removeListener(name, handler);
        }
      });
    } else if (typeof coworker.addEventListener === 'function') {
      coworker.addEventListener(name, handler);
      off.push(() => coworker.removeEventListener(name, handler));
    } else {
      throw new TypeError('attach(coworker): it has neither on() nor addEventListener()');
    }
  }
  return () => off.forEach((f) => f());
}

/**
 * Forwards a coworker engine's runs to runledger: `coworker:before:run`, `:after:run` and
 * `:error:run` become `run.checkpoint` events. Returns the client (`record`, `flush`,
 * `close`, `detach`, `stats`).
 */
export function attach(coworker, options = {}) {
  const client = options instanceof RunLedgerClient ? options : new RunLedgerClient(options);
  let detach = () => {};
  try {
    detach = subscribe(coworker, client);
    client.detachers.push(detach);
  } catch (e) {
    client._error(e, { op: 'attach' });
  }
  client.detach = () => {
    try { detach(); } catch (e) { client._error(e, { op: 'detach' }); }
  };
  return client;
}

export default attach;
