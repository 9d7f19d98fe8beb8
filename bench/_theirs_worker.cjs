// Benchmark worker for the original seaport 2.0.9 (substack), run on Node:
//
//   node --expose-gc bench/_theirs_worker.cjs <path to node_modules/seaport>
//
// Handlers may return a value or a Promise. Same commands and replies as _ours_worker.ts (see _types.ts), mapped onto
// the 2.0.9 API: createServer()/listen(), connect(port, host, opts),
// register(role) (port chosen at random by the client, no completion
// callback), query(role) (synchronous, answered from the local replica every
// client keeps), get(role, cb) (waits for the next "register" event), server
// events "register" and "free". Exits when stdin closes.
"use strict";

const fs = require("node:fs");
const inspector = require("node:inspector");
const readline = require("node:readline");

const seaport = require(process.argv[2]);

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const cpu = () => {
  const c = process.cpuUsage();
  return { user: c.user, system: c.system };
};

// Same formula as nameOf() in _types.ts.
function nameOf(kind, i, conns) {
  if (kind === "rec") return `rec${i % conns}-${Math.floor(i / conns)}@1.0.0`;
  const m = Math.floor(i / 100);
  return `svc${i % 100}@${m % 3}.${Math.floor(m / 3) % 10}.${m % 7}`;
}

// Same as summarize() in _types.ts.
function summarize(samples) {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  const sum = s.reduce((a, b) => a + b, 0);
  return {
    n: s.length,
    p50: s.length ? at(0.5) : NaN,
    p99: s.length ? at(0.99) : NaN,
    mean: s.length ? sum / s.length : NaN,
    max: s.length ? s[s.length - 1] : NaN,
  };
}

// ---- server state ----

let server;
let count = 0;
let lastChange = now();
const watches = new Map();
let nextWatch = 1;

const hit = (w) => (w.cmp === "ge" ? count >= w.n : count <= w.n);

function changed(delta) {
  count += delta;
  lastChange = now();
  for (const w of watches.values()) {
    w.tFirst ??= lastChange;
    if (w.t === undefined && hit(w)) {
      w.t = lastChange;
      w.cpu = cpu();
      for (const d of w.done) d();
    }
  }
}

function arm(spec) {
  const id = nextWatch++;
  const w = { cmp: spec.cmp, n: spec.n, done: [] };
  if (hit(w)) {
    w.t = lastChange;
    w.cpu = cpu();
  }
  watches.set(id, w);
  return id;
}

// ---- client state ----

const clients = [];

function client(i) {
  const c = clients[i];
  if (c === undefined) throw new Error(`No connection ${i}`);
  return c;
}

// ---- profiler ----

let session;
const post = (method, params = {}) =>
  new Promise((resolve, reject) =>
    session.post(
      method,
      params,
      (err, res) => (err ? reject(err) : resolve(res)),
    )
  );

const handlers = {
  clock: () => ({ t: now() }),

  async profileStart() {
    session = new inspector.Session();
    session.connect();
    await post("Profiler.enable");
    await post("Profiler.setSamplingInterval", { interval: 200 });
    await post("Profiler.start");
    return {};
  },

  async profileStop({ path }) {
    const { profile } = await post("Profiler.stop");
    fs.writeFileSync(path, JSON.stringify(profile));
    session.disconnect();
    session = undefined;
    return {};
  },

  async listen({ port, options, watch }) {
    server = seaport.createServer({ ...options });
    // "register" also fires when a known id changes its metadata; the bench
    // never does that, so +1 per event is the number of registrations.
    server.on("register", () => changed(1));
    server.on("free", () => changed(-1));
    const w = watch === undefined ? undefined : arm(watch);
    await new Promise((resolve, reject) => {
      server.server.once("error", reject);
      server.listen(port, "127.0.0.1", resolve);
    });
    const result = { port: server.address().port, t: now(), cpu: cpu() };
    if (w !== undefined) result.watch = w;
    return result;
  },

  watch(spec) {
    return { watch: arm(spec), count };
  },

  async await({ watch, timeoutMs }) {
    const w = watches.get(watch);
    if (w === undefined) throw new Error(`No watch ${watch}`);
    if (w.t === undefined) {
      let timer;
      await new Promise((resolve) => {
        w.done.push(resolve);
        timer = setTimeout(resolve, timeoutMs);
      });
      clearTimeout(timer);
    }
    watches.delete(watch);
    const tFirst = w.tFirst;
    return w.t === undefined
      ? { reached: false, t: now(), tFirst, count, cpu: cpu() }
      : { reached: true, t: w.t, tFirst, count, cpu: w.cpu };
  },

  count: () => ({ count, t: now() }),

  async mem() {
    if (typeof global.gc !== "function") {
      throw new Error("Run with --expose-gc");
    }
    global.gc();
    await sleep(50);
    global.gc();
    const m = process.memoryUsage();
    return { heapUsed: m.heapUsed, rss: m.rss };
  },

  cpu: () => cpu(),

  records() {
    return {
      records: server.query().map((r) => ({
        role: `${r.role}@${r.version}`,
        host: r.host,
        port: r.port,
      })),
    };
  },

  async connect({ port, n, options }) {
    const fresh = [];
    for (let i = 0; i < n; i++) {
      const c = seaport.connect(port, "127.0.0.1", { ...options });
      // Up once the server's snapshot has arrived ("synced"), which comes
      // after "helo" (so the client knows its host and register() sends).
      fresh.push(new Promise((resolve) => c.once("synced", resolve)));
      clients.push(c);
    }
    await Promise.all(fresh);
    return { t: now() };
  },

  register({ total, conns, offset, kind }) {
    const mine = [];
    for (let i = 0; i < total; i++) {
      const local = (i % conns) - offset;
      if (local < 0 || local >= clients.length) continue;
      mine.push([client(local), nameOf(kind, i, conns)]);
    }
    const t0 = now();
    for (const [c, name] of mine) c.register(name);
    const tIssued = now();
    // register() has no completion; the server's count tells.
    return { t0, tIssued, tDone: tIssued, n: mine.length };
  },

  async query({ count, warmup, timeLimitMs, exact }) {
    const c = client(0);
    const patterns = Array.from(
      { length: 100 },
      (_, k) => `svc${k}@${exact ? "1.0.1" : "1.x"}`,
    );
    for (let k = 0; k < warmup; k++) c.query(patterns[k % 100]);
    const lat = [];
    let records = 0;
    const deadline = now() + timeLimitMs;
    for (let k = 0; k < count && now() < deadline; k++) {
      const t = now();
      const r = c.query(patterns[k % 100]);
      lat.push((now() - t) * 1000);
      records += r.length;
      // query() is synchronous; let the event loop breathe now and then.
      if (k % 100 === 99) await new Promise((r) => setImmediate(r));
    }
    return { ...summarize(lat), records: records / Math.max(1, lat.length) };
  },

  async wake({ trials, warmup, timeLimitMs }) {
    const waiter = client(0);
    const registrant = client(1);
    const lat = [];
    const deadline = now() + timeLimitMs;
    for (let k = -warmup; k < trials && now() < deadline; k++) {
      const name = k < 0 ? `warm${-k}` : `wake${k}`;
      let t1 = 0;
      // get() is local: it waits at once, no round trip needed.
      const woken = new Promise((resolve) => {
        waiter.get(`${name}@1`, () => {
          t1 = now();
          resolve();
        });
      });
      const t0 = now();
      registrant.register(`${name}@1.0.0`);
      await woken;
      if (k >= 0) lat.push((t1 - t0) * 1000);
    }
    return summarize(lat);
  },
};

const reply = (r) => process.stdout.write(JSON.stringify(r) + "\n");

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  let req;
  try {
    req = JSON.parse(line);
  } catch {
    process.stderr.write(`bad request line: ${line.slice(0, 200)}\n`);
    return;
  }
  const fn = handlers[req.cmd];
  if (fn === undefined) {
    reply({ id: req.id, ok: false, error: `Unknown command "${req.cmd}"` });
    return;
  }
  Promise.resolve()
    .then(() => fn(req.args || {}))
    .then(
      (result) => reply({ id: req.id, ok: true, result }),
      (err) =>
        reply({
          id: req.id,
          ok: false,
          error: String(err && err.stack || err),
        }),
    );
});
lines.on("close", () => process.exit(0));
