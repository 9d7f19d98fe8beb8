/**
 * Benchmark worker for this package: a server or a set of clients, driven by
 * `main.ts` over JSON lines (see `_types.ts`). Runs on Deno against `mod.ts`
 * and on Node against the built npm package (transpiled by `main.ts`):
 *
 * ```sh
 * deno run -A --v8-flags=--expose-gc bench/_ours_worker.ts file:///…/mod.ts
 * node --expose-gc .tmp/bench-node/_ours_worker.js file:///…/npm/esm/mod.js
 * ```
 *
 * Exits when stdin closes, so it never outlives the orchestrator.
 *
 * @module
 */
import process from "node:process";
import { createInterface } from "node:readline";
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import type * as Seaport from "../mod.ts";
import {
  type ArgsOf,
  type Commands,
  type Cpu,
  nameOf,
  type ResultOf,
  summarize,
  type WatchSpec,
  type WorkerReply,
  type WorkerRequest,
} from "./_types.ts";

type Mod = typeof Seaport;
type Handlers = {
  [K in keyof Commands]: (args: ArgsOf<K>) => Promise<ResultOf<K>>;
};

const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cpu = (): Cpu => {
  const c = process.cpuUsage();
  return { user: c.user, system: c.system };
};
const gc = (globalThis as { gc?: () => void }).gc;

const modUrl = process.argv[2];
if (modUrl === undefined) {
  process.stderr.write("usage: _ours_worker <module URL>\n");
  process.exit(2);
}
const mod: Mod = await import(modUrl);

// ---- server state ----

let server: Seaport.Server | undefined;
let count = 0;
let lastChange = now();
interface Watch extends WatchSpec {
  t?: number;
  tFirst?: number;
  cpu?: Cpu;
  done: (() => void)[];
}
const watches = new Map<number, Watch>();
let nextWatch = 1;

function hit(w: WatchSpec): boolean {
  return w.cmp === "ge" ? count >= w.n : count <= w.n;
}

function changed(delta: number): void {
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

function arm(spec: WatchSpec): number {
  const id = nextWatch++;
  const w: Watch = { cmp: spec.cmp, n: spec.n, done: [] };
  // Already there: the last change is when it got there.
  if (hit(w)) {
    w.t = lastChange;
    w.cpu = cpu();
  }
  watches.set(id, w);
  return id;
}

// ---- client state ----

const clients: Seaport.Ports[] = [];
let clientErrors = 0;

function client(i: number): Seaport.Ports {
  const c = clients[i];
  if (c === undefined) throw new Error(`No connection ${i}`);
  return c;
}

// ---- profiler ----

let session: Session | undefined;
function post(method: string, params: object = {}): Promise<unknown> {
  return new Promise((resolve, reject) => {
    session!.post(
      method,
      params,
      (err: Error | null, res: unknown) => err ? reject(err) : resolve(res),
    );
  });
}

const handlers: Handlers = {
  clock: () => Promise.resolve({ t: now() }),

  async profileStart() {
    session = new Session();
    session.connect();
    await post("Profiler.enable");
    await post("Profiler.setSamplingInterval", { interval: 200 });
    await post("Profiler.start");
    return {};
  },

  async profileStop({ path }) {
    if (session === undefined) throw new Error("The profiler is not running");
    const { profile } = await post("Profiler.stop") as { profile: unknown };
    writeFileSync(path, JSON.stringify(profile));
    session.disconnect();
    session = undefined;
    return {};
  },

  async listen({ port, options, watch }) {
    const opts = { ...options } as Seaport.ServerOptions;
    server = mod.createServer(opts);
    server.on("allocate", () => changed(1));
    server.on("assume", () => changed(1));
    server.on("free", () => changed(-1));
    server.on("error", (err) => process.stderr.write(`server error: ${err}\n`));
    const w = watch === undefined ? undefined : arm(watch);
    const addr = await server.listen(port, "127.0.0.1");
    return {
      port: addr.port,
      t: now(),
      cpu: cpu(),
      ...(w === undefined ? {} : { watch: w }),
    };
  },

  watch(spec) {
    return Promise.resolve({ watch: arm(spec), count });
  },

  async await({ watch, timeoutMs }) {
    const w = watches.get(watch);
    if (w === undefined) throw new Error(`No watch ${watch}`);
    if (w.t === undefined) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        w.done.push(resolve);
        timer = setTimeout(resolve, timeoutMs);
      });
      clearTimeout(timer);
    }
    watches.delete(watch);
    const tFirst = w.tFirst;
    return w.t === undefined
      ? { reached: false, t: now(), tFirst, count, cpu: cpu() }
      : { reached: true, t: w.t, tFirst, count, cpu: w.cpu! };
  },

  count: () => Promise.resolve({ count, t: now() }),

  async mem() {
    if (gc === undefined) throw new Error("Run with --expose-gc");
    gc();
    await sleep(50);
    gc();
    const m = process.memoryUsage();
    return { heapUsed: m.heapUsed, rss: m.rss };
  },

  cpu: () => Promise.resolve(cpu()),

  records() {
    if (server === undefined) throw new Error("No server");
    return Promise.resolve({
      records: server.query().map((r) => ({
        role: `${r.role}@${r.version}`,
        host: r.host,
        port: r.port,
      })),
    });
  },

  async connect({ port, n, options, advertise }) {
    const fresh: Seaport.Ports[] = [];
    for (let i = 0; i < n; i++) {
      const opts = { ...options } as Seaport.ConnectOptions;
      const host = advertise?.[i];
      if (host) opts.advertise = host;
      const c = mod.connect("127.0.0.1", port, opts);
      c.on("error", (err) => {
        if (clientErrors++ < 5) process.stderr.write(`client error: ${err}\n`);
      });
      fresh.push(c);
    }
    clients.push(...fresh);
    // A query answers once the handshake is done.
    await Promise.all(fresh.map((c) => c.query("bench-probe")));
    return { t: now() };
  },

  async register({ total, conns, offset, kind }) {
    const mine: [Seaport.Ports, string][] = [];
    for (let i = 0; i < total; i++) {
      const local = (i % conns) - offset;
      if (local < 0 || local >= clients.length) continue;
      mine.push([client(local), nameOf(kind, i, conns)]);
    }
    const pending: Promise<number>[] = new Array(mine.length);
    const t0 = now();
    for (let i = 0; i < mine.length; i++) {
      const [c, name] = mine[i]!;
      pending[i] = c.service(name);
    }
    const tIssued = now();
    await Promise.all(pending);
    return { t0, tIssued, tDone: now(), n: mine.length };
  },

  async query({ count, warmup, timeLimitMs, exact }) {
    const c = client(0);
    const patterns = Array.from(
      { length: 100 },
      (_, k) => `svc${k}@${exact ? "1.0.1" : "1.x"}`,
    );
    for (let k = 0; k < warmup; k++) await c.query(patterns[k % 100]!);
    const lat: number[] = [];
    let records = 0;
    const deadline = now() + timeLimitMs;
    for (let k = 0; k < count && now() < deadline; k++) {
      const t = now();
      const r = await c.query(patterns[k % 100]!);
      lat.push((now() - t) * 1000);
      records += r.length;
    }
    return { ...summarize(lat), records: records / Math.max(1, lat.length) };
  },

  async wake({ trials, warmup, timeLimitMs }) {
    const waiter = client(0);
    const registrant = client(1);
    const lat: number[] = [];
    const deadline = now() + timeLimitMs;
    for (let k = -warmup; k < trials && now() < deadline; k++) {
      const name = k < 0 ? `warm${-k}` : `wake${k}`;
      let t1 = 0;
      const woken = new Promise<void>((resolve) => {
        waiter.get(`${name}@1`, () => {
          t1 = now();
          resolve();
        });
      });
      // Answered after the get: the get is now waiting at the server.
      await waiter.query("bench-probe");
      const t0 = now();
      const registered = registrant.service(`${name}@1.0.0`);
      await Promise.all([woken, registered]);
      if (k >= 0) lat.push((t1 - t0) * 1000);
    }
    return summarize(lat);
  },

  async echoListen() {
    return { port: await echoListen() };
  },

  async echo({ port, count, warmup }) {
    const c = await echoConnect(port);
    const line = new TextEncoder().encode(
      JSON.stringify({ id: 1234, op: "query", pattern: "svc42@1.x" }) + "\n",
    );
    const lat: number[] = [];
    for (let k = -warmup; k < count; k++) {
      const t = now();
      const answered = c.read();
      await c.write(line);
      await answered;
      if (k >= 0) lat.push((now() - t) * 1000);
    }
    c.close();
    return summarize(lat);
  },
};

// ---- raw sockets: the round-trip floor of this runtime ----

interface RawConn {
  write(b: Uint8Array): Promise<unknown>;
  read(): Promise<unknown>;
  close(): void;
}

interface DenoSockets {
  listen(o: { hostname: string; port: number }): AsyncIterable<DenoSocket> & {
    addr: { port: number };
  };
  connect(o: { hostname: string; port: number }): Promise<DenoSocket>;
}
interface DenoSocket {
  read(b: Uint8Array): Promise<number | null>;
  write(b: Uint8Array): Promise<number>;
  setNoDelay(on: boolean): void;
  close(): void;
}
const deno = (globalThis as { Deno?: DenoSockets }).Deno;

async function echoListen(): Promise<number> {
  if (deno !== undefined) {
    const l = deno.listen({ hostname: "127.0.0.1", port: 0 });
    (async () => {
      for await (const c of l) {
        c.setNoDelay(true);
        (async () => {
          const buf = new Uint8Array(64 * 1024);
          try {
            for (let n; (n = await c.read(buf)) !== null;) {
              await c.write(buf.subarray(0, n));
            }
          } catch { /* closed */ }
        })();
      }
    })();
    return l.addr.port;
  }
  const net = await import("node:net");
  const srv = net.createServer({ noDelay: true }, (s) => {
    s.on("data", (d) => s.write(d));
    s.on("error", () => {});
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  return (srv.address() as { port: number }).port;
}

async function echoConnect(port: number): Promise<RawConn> {
  if (deno !== undefined) {
    const c = await deno.connect({ hostname: "127.0.0.1", port });
    c.setNoDelay(true);
    const buf = new Uint8Array(64 * 1024);
    return {
      write: (b) => c.write(b),
      read: () => c.read(buf),
      close: () => c.close(),
    };
  }
  const net = await import("node:net");
  const s = net.connect({ port, host: "127.0.0.1", noDelay: true });
  await new Promise((r) => s.once("connect", r));
  let wake: (() => void) | undefined;
  s.on("data", () => wake?.());
  return {
    write: (b) => new Promise((r) => s.write(b, r)),
    read: () => new Promise<void>((r) => wake = r),
    close: () => s.destroy(),
  };
}

function reply(r: WorkerReply): void {
  process.stdout.write(JSON.stringify(r) + "\n");
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  let req: WorkerRequest;
  try {
    req = JSON.parse(line) as WorkerRequest;
  } catch {
    process.stderr.write(`bad request line: ${line.slice(0, 200)}\n`);
    return;
  }
  const fn = handlers[req.cmd] as
    | ((args: unknown) => Promise<unknown>)
    | undefined;
  if (fn === undefined) {
    reply({ id: req.id, ok: false, error: `Unknown command "${req.cmd}"` });
    return;
  }
  fn(req.args ?? {}).then(
    (result) => reply({ id: req.id, ok: true, result }),
    (err) =>
      reply({
        id: req.id,
        ok: false,
        error: err instanceof Error
          ? `${err.name}: ${err.message}`
          : String(err),
      }),
  );
});
// The orchestrator is gone (or done): leave at once, sockets and all.
lines.on("close", () => process.exit(0));
