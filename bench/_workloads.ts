/**
 * The benchmark workloads: each starts its own server and client workers,
 * measures, and returns one run's figures; `main.ts` runs them and takes the
 * medians. See BENCHMARKS.md for what each one measures.
 *
 * @module
 */
import { type Launch, WorkerProc } from "./_proc.ts";
import type { ImplId, Sample } from "./_report.ts";
import type { ImplOptions, Latency, NameKind, Rec } from "./_types.ts";

const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Workload sizes; `--set key=value` overrides any of them. */
export const SIZES = {
  /** (a) registrations, and the (b)/(c)/(e) middle size. */
  regs: 10_000,
  /** (a) connections in the many-clients case. */
  clients: 50,
  /** (a) processes the many clients are spread over. */
  clientProcs: 2,
  /** (b) sequential queries (after `queryWarmup` uncounted ones). */
  queries: 2000,
  queryWarmup: 100,
  /** (c) wake-up trials (after `wakeWarmup` uncounted ones). */
  trials: 2000,
  wakeWarmup: 20,
  /** (d) registrations held by the killed or stopped client. */
  hold: 1000,
  /** (d) the longest wait for a half-open connection to be freed, ms. */
  stopCapMs: 20_000,
  /** (d) the configured heartbeat and timeout, ms. */
  heartbeat: 1000,
  hbTimeout: 3000,
  /** Scaling: the small and large registry sizes for (b)/(c); (e) at large. */
  small: 1000,
  large: 100_000,
  /** (f) connections, registrations per connection, client processes. */
  fConns: 200,
  fPer: 5,
  fProcs: 4,
  /** Longest time one query or wake-up loop may run, ms. */
  loopLimitMs: 10_000,
};
/** Workload sizes. */
export type Sizes = typeof SIZES;

/** The sizes of `--quick`. */
export const QUICK: Sizes = {
  regs: 1000,
  clients: 5,
  clientProcs: 2,
  queries: 200,
  queryWarmup: 20,
  trials: 50,
  wakeWarmup: 5,
  hold: 100,
  stopCapMs: 3000,
  heartbeat: 300,
  hbTimeout: 900,
  small: 100,
  large: 5000,
  fConns: 20,
  fPer: 5,
  fProcs: 2,
  loopLimitMs: 5000,
};

/** Workload groups, as `--only` names them. */
export const GROUPS = ["a", "b", "c", "d", "e", "f", "scale"] as const;
/** A workload group. */
export type Group = typeof GROUPS[number];

/** An implementation under test and how to start its workers. */
export interface Impl {
  id: ImplId;
  launch: Launch | undefined;
  note?: string;
  ours: boolean;
  /** Our heartbeat options exist (detected from server.ts). */
  heartbeat: boolean;
}

/** One run's figures by metric key. */
export type Metrics = Record<string, Sample>;

/** What a workload run needs to know. */
export interface Ctx {
  /** The workload groups selected. */
  only: ReadonlySet<Group>;
  /** Where CPU profiles go (`--profile`), if anywhere. */
  profileDir: string | undefined;
  /** The sizes. */
  sizes: Sizes;
  run: number;
  /** Keys whose wait hit its cap in an earlier run (not repeated). */
  capped: Map<string, Sample>;
}

/** Starts a worker for an implementation. */
export function spawnWorker(impl: Impl): WorkerProc {
  return new WorkerProc(impl.launch!);
}

/** Runs `body` with fresh workers, killing all of them afterwards. */
async function withWorkers<T>(
  body: (spawn: () => WorkerProc) => Promise<T>,
  impl: Impl,
): Promise<T> {
  const mine: WorkerProc[] = [];
  try {
    return await body(() => {
      const w = spawnWorker(impl);
      mine.push(w);
      return w;
    });
  } finally {
    await Promise.all(mine.map((w) => w.kill()));
  }
}

async function startServer(
  w: WorkerProc,
  ctx: Ctx,
  impl: Impl,
  name: string,
  options: ImplOptions = {},
  port = 0,
): Promise<number> {
  const { port: p } = await w.call("listen", { port, options }, 60_000);
  await profile(w, ctx, impl, name);
  return p;
}

const profiled = new Map<WorkerProc, string>();

/** With --profile, profiles `w` (ours, first run) until stopProfile(w). */
async function profile(
  w: WorkerProc,
  ctx: Ctx,
  impl: Impl,
  name: string,
): Promise<void> {
  if (ctx.profileDir === undefined || !impl.ours || ctx.run !== 1) return;
  await stopProfile(w);
  await w.call("profileStart", {});
  profiled.set(w, `${ctx.profileDir}/${impl.id}-${name}.cpuprofile`);
}

async function stopProfile(w: WorkerProc): Promise<void> {
  const path = profiled.get(w);
  if (path === undefined) return;
  profiled.delete(w);
  await w.call("profileStop", { path });
  profiles.push(path);
}
/** The profiles written so far (with `--profile`). */
export const profiles: string[] = [];

/** Connects `conns` connections in one client worker to `port`. */
async function clientsOn(
  w: WorkerProc,
  port: number,
  conns: number,
  options: ImplOptions = {},
  advertise?: string[],
): Promise<void> {
  await w.call("connect", {
    port,
    n: conns,
    options,
    ...(advertise === undefined ? {} : { advertise }),
  }, 120_000);
}

/**
 * Registers `total` names over the given client workers (each holding a
 * slice of `conns` connections) and waits until the server holds `expect`.
 *
 * @returns registrations per second, from the first call to the server's
 * count being reached.
 */
async function populate(
  server: WorkerProc,
  workers: { w: WorkerProc; offset: number }[],
  total: number,
  conns: number,
  kind: NameKind,
  expect: number,
  timeoutMs = 180_000,
): Promise<{ rate: number; ms: number }> {
  const { watch } = await server.call("watch", { cmp: "ge", n: expect });
  const calls = workers.map(({ w, offset }) =>
    w.call("register", { total, conns, offset, kind }, timeoutMs)
  );
  const done = await server.call(
    "await",
    { watch, timeoutMs },
    timeoutMs + 10_000,
  );
  const regs = await Promise.all(calls);
  if (!done.reached) {
    throw new Error(
      `The server holds ${done.count} of ${expect} after ${timeoutMs} ms`,
    );
  }
  const t0 = Math.min(...regs.map((r) => r.t0));
  const ms = done.t - t0;
  return { rate: total / (ms / 1000), ms };
}

/**
 * Our connections are one host each: big sets are spread over advertised
 * (made-up) hosts, with the local port probe off as the option's docs advise
 * for services that do not run on the client's machine.
 */
function populationConns(
  impl: Impl,
  n: number,
): { conns: number; advertise?: string[]; options?: ImplOptions } {
  if (!impl.ours) return { conns: Math.max(1, Math.ceil(n / 50_000)) };
  const conns = Math.max(1, Math.ceil(n / 10_000));
  if (conns === 1) return { conns };
  return {
    conns,
    advertise: Array.from(
      { length: conns },
      (_, i) => `10.99.${i >> 8}.${i & 255}`,
    ),
    options: { probe: false },
  };
}

async function queryAndWake(
  spawn: () => WorkerProc,
  port: number,
  ctx: Ctx,
  size: string,
  want: { b: boolean; c: boolean },
  m: Metrics,
  prof?: { server: WorkerProc; impl: Impl },
): Promise<void> {
  const s = ctx.sizes;
  if (!want.b && !want.c) return;
  // One fresh client process: connection 0 queries, then waits in get();
  // connection 1 registers, under a host of its own (the registrations
  // already there may fill 127.0.0.1's port range).
  const c = spawn();
  await clientsOn(c, port, 2, {}, ["", "10.98.0.1"]);
  if (want.b) {
    if (prof) await profile(prof.server, ctx, prof.impl, `b-query-${size}`);
    const r = await c.call("query", {
      count: s.queries,
      warmup: s.queryWarmup,
      timeLimitMs: s.loopLimitMs,
    }, s.loopLimitMs + 60_000);
    m[`b.p50.${size}`] = r.p50;
    m[`b.p99.${size}`] = r.p99;
    m[`b.records.${size}`] = r.records;
    if (r.n < s.queries) m[`b.n.${size}`] = r.n;
    if (prof) await stopProfile(prof.server);
    if (size !== "regs") {
      // the same with an answer of a few records at every size
      const x = await c.call("query", {
        count: s.queries,
        warmup: s.queryWarmup,
        timeLimitMs: s.loopLimitMs,
        exact: true,
      }, s.loopLimitMs + 60_000);
      m[`bx.p50.${size}`] = x.p50;
      m[`bx.p99.${size}`] = x.p99;
      m[`bx.records.${size}`] = x.records;
      if (x.n < s.queries) m[`bx.n.${size}`] = x.n;
    }
  }
  if (want.c) {
    if (prof) await profile(prof.server, ctx, prof.impl, `c-wake-${size}`);
    const r: Latency = await c.call("wake", {
      trials: s.trials,
      warmup: s.wakeWarmup,
      timeLimitMs: s.loopLimitMs,
    }, s.loopLimitMs + 60_000);
    m[`c.p50.${size}`] = r.p50;
    m[`c.p99.${size}`] = r.p99;
    if (r.n < s.trials) m[`c.n.${size}`] = r.n;
    if (prof) await stopProfile(prof.server);
  }
  await c.kill();
}

/** (a) with 1 client, then (e), (b), (c) on the same 10,000 registrations. */
export function scenarioA1(impl: Impl, ctx: Ctx): Promise<Metrics> {
  const s = ctx.sizes;
  const want = ctx.only;
  return withWorkers(async (spawn) => {
    const m: Metrics = {};
    const server = spawn();
    const port = await startServer(server, ctx, impl, "a1");
    const base = await server.call("mem", {});
    const cl = spawn();
    await clientsOn(cl, port, 1);
    await profile(cl, ctx, impl, "a1-client");
    const { rate, ms } = await populate(
      server,
      [{ w: cl, offset: 0 }],
      s.regs,
      1,
      "svc",
      s.regs,
    );
    m["a.rate.1"] = rate;
    m["a.ms.1"] = ms;
    await stopProfile(server);
    await stopProfile(cl);
    const mem = await server.call("mem", {});
    m["e.heap.regs"] = (mem.heapUsed - base.heapUsed) / s.regs;
    m["e.rss.regs"] = (mem.rss - base.rss) / s.regs;
    await queryAndWake(
      spawn,
      port,
      ctx,
      "regs",
      {
        b: want.has("b"),
        c: want.has("c"),
      },
      m,
      { server, impl },
    );
    return m;
  }, impl);
}

/** (a) with 1 client whose port probe is off (ours only). */
export function scenarioA1NoProbe(impl: Impl, ctx: Ctx): Promise<Metrics> {
  const s = ctx.sizes;
  if (!impl.ours) return Promise.resolve({});
  return withWorkers(async (spawn) => {
    const server = spawn();
    const port = await startServer(server, ctx, impl, "a1-noprobe");
    const cl = spawn();
    await clientsOn(cl, port, 1, { probe: false });
    await profile(cl, ctx, impl, "a1-noprobe-client");
    const { rate } = await populate(
      server,
      [{ w: cl, offset: 0 }],
      s.regs,
      1,
      "svc",
      s.regs,
    );
    await stopProfile(server);
    await stopProfile(cl);
    return { "a.rate.1.noprobe": rate };
  }, impl);
}

/**
 * The floor under (b) and (c): a raw TCP echo round trip between two
 * processes on this runtime's own sockets, no seaport code (ours only: the
 * runtime is what it measures).
 */
export function scenarioFloor(impl: Impl, ctx: Ctx): Promise<Metrics> {
  const s = ctx.sizes;
  if (!impl.ours) return Promise.resolve({});
  return withWorkers(async (spawn) => {
    const server = spawn();
    const { port } = await server.call("echoListen", {});
    const r: Latency = await spawn().call("echo", {
      port,
      count: s.queries,
      warmup: s.queryWarmup,
    }, 60_000);
    return { "floor.p50": r.p50, "floor.p99": r.p99 };
  }, impl);
}

/** (a) with many clients over several processes. */
export function scenarioA50(impl: Impl, ctx: Ctx): Promise<Metrics> {
  const s = ctx.sizes;
  return withWorkers(async (spawn) => {
    const server = spawn();
    const port = await startServer(server, ctx, impl, "a50");
    const per = Math.ceil(s.clients / s.clientProcs);
    const workers: { w: WorkerProc; offset: number }[] = [];
    for (let p = 0, offset = 0; offset < s.clients; p++, offset += per) {
      workers.push({ w: spawn(), offset });
    }
    await Promise.all(
      workers.map(({ w, offset }) =>
        clientsOn(w, port, Math.min(per, s.clients - offset))
      ),
    );
    const { rate, ms } = await populate(
      server,
      workers,
      s.regs,
      s.clients,
      "svc",
      s.regs,
    );
    await stopProfile(server);
    return { "a.rate.many": rate, "a.ms.many": ms };
  }, impl);
}

/** (b) and (c) at another registry size; (e) at the large one. */
export function scenarioScale(
  impl: Impl,
  ctx: Ctx,
  which: "small" | "large",
): Promise<Metrics> {
  const s = ctx.sizes;
  const n = s[which];
  const want = ctx.only;
  return withWorkers(async (spawn) => {
    const m: Metrics = {};
    const server = spawn();
    const port = await startServer(server, ctx, impl, `scale-${which}`);
    const base = await server.call("mem", {});
    const cl = spawn();
    const { conns, advertise, options } = populationConns(impl, n);
    await clientsOn(cl, port, conns, options ?? {}, advertise);
    const { rate } = await populate(
      server,
      [{ w: cl, offset: 0 }],
      n,
      conns,
      "svc",
      n,
    );
    m[`a.rate.${which}`] = rate;
    if (which === "large") {
      const mem = await server.call("mem", {});
      m["e.heap.large"] = (mem.heapUsed - base.heapUsed) / n;
      m["e.rss.large"] = (mem.rss - base.rss) / n;
    }
    const scale = want.has("scale");
    await stopProfile(server);
    await queryAndWake(spawn, port, ctx, which, { b: scale, c: scale }, m, {
      server,
      impl,
    });
    return m;
  }, impl);
}

/** (d) SIGKILL, SIGSTOP with defaults, SIGSTOP with a short heartbeat. */
export async function scenarioD(impl: Impl, ctx: Ctx): Promise<Metrics> {
  const s = ctx.sizes;
  const m: Metrics = {};
  const hold = (
    mode: "kill" | "stop",
    options: ImplOptions,
    capMs: number,
    name: string = mode,
    held: number = s.hold,
  ): Promise<{ total: Sample; server: Sample }> =>
    withWorkers(async (spawn) => {
      const server = spawn();
      const port = await startServer(server, ctx, impl, name, options);
      const holder = spawn();
      await clientsOn(holder, port, 1, options);
      const connected = now();
      await populate(
        server,
        [{ w: holder, offset: 0 }],
        held,
        1,
        "svc",
        held,
      );
      if (mode === "stop" && options.heartbeat !== undefined) {
        // Let a few heartbeats flow first (2.0.9 arms its timeout on the first).
        const wait = connected + 2 * options.heartbeat - now();
        if (wait > 0) await sleep(wait);
      }
      const { watch } = await server.call("watch", { cmp: "le", n: 0 });
      const t0 = now();
      holder.signal(mode === "kill" ? "SIGKILL" : "SIGSTOP");
      const r = await server.call(
        "await",
        { watch, timeoutMs: capMs },
        capMs + 30_000,
      );
      await stopProfile(server);
      if (!r.reached) {
        return { total: { gt: capMs }, server: { na: "not freed" } };
      }
      return { total: r.t - t0, server: r.t - (r.tFirst ?? r.t) };
    }, impl);

  if (ctx.only.has("d")) {
    const kill = await hold("kill", {}, 10_000);
    m["d.kill"] = kill.total;
    m["d.kill.server"] = kill.server;
    // The same with one registration: the kill itself, until the kernel has
    // torn the process down and closed its socket (the floor of the above).
    m["d.kill.one"] = (await hold("kill", {}, 10_000, "kill-one", 1)).total;
    const noHb = impl.ours && !impl.heartbeat;
    // Both half-open cases at once: each is a timer running out on an idle
    // server of its own, so they do not disturb each other.
    await Promise.all(
      ([
        ["d.stop.default", {}],
        ["d.stop.hb", { heartbeat: s.heartbeat, timeout: s.hbTimeout }],
      ] as const).map(async ([key, options]) => {
        const seen = ctx.capped.get(`${impl.id}:${key}`);
        if (noHb) m[key] = { na: "no heartbeat yet" };
        else if (seen !== undefined) m[key] = seen;
        else {
          const v = (await hold("stop", options, s.stopCapMs, key)).total;
          m[key] = v;
          if (typeof v === "object" && "gt" in v) {
            ctx.capped.set(`${impl.id}:${key}`, v);
          }
        }
      }),
    );
  }
  return m;
}

/** (f) restart recovery, then kill the clients of some connections. */
export function scenarioF(impl: Impl, ctx: Ctx): Promise<Metrics> {
  const s = ctx.sizes;
  const total = s.fConns * s.fPer;
  const per = s.fConns / s.fProcs;
  const victims = per * s.fPer;
  return withWorkers(async (spawn) => {
    const m: Metrics = {};
    const first = spawn();
    const port = await startServer(first, ctx, impl, "f-before");
    const procs = Array.from(
      { length: s.fProcs },
      (_, p) => ({ w: spawn(), offset: p * per }),
    );
    await Promise.all(procs.map(({ w }) => clientsOn(w, port, per)));
    await populate(first, procs, total, s.fConns, "rec", total);
    const before = new Map(
      (await first.call("records", {})).records.map((r) => [r.role, r]),
    );
    await stopProfile(first);

    // Kill the server and start a new one on the same port.
    const tKill = now();
    await first.kill();
    const second = spawn();
    const up = await second.call("listen", {
      port,
      options: {},
      watch: { cmp: "ge", n: total },
    }, 60_000);
    if (ctx.profileDir !== undefined && impl.ours && ctx.run === 1) {
      await second.call("profileStart", {});
      profiled.set(
        second,
        `${ctx.profileDir}/${impl.id}-f-recovery.cpuprofile`,
      );
    }
    const back = await second.call("await", {
      watch: up.watch!,
      timeoutMs: 30_000,
    }, 60_000);
    m["f.back"] = back.reached ? back.t - up.t : { gt: 30_000 };
    m["f.backKill"] = back.reached
      ? back.t - tKill
      : { gt: 30_000 + (up.t - tKill) };
    // CPU: until the server goes quiet (under 2 ms per 100 ms), at most 10 s.
    let cpu = await second.call("cpu", {});
    const quietBy = now() + 10_000;
    let quiet = false;
    while (!quiet && now() < quietBy) {
      await sleep(100);
      const next = await second.call("cpu", {});
      const used = (next.user + next.system - cpu.user - cpu.system) / 1000;
      cpu = next;
      quiet = used < 2;
    }
    const spent = (cpu.user + cpu.system - up.cpu.user - up.cpu.system) / 1000;
    m["f.cpu"] = quiet ? spent : { gt: spent };
    m["f.cpuAtBack"] =
      (back.cpu.user + back.cpu.system - up.cpu.user - up.cpu.system) / 1000;
    await stopProfile(second);

    const after = (await second.call("records", {})).records;
    const roles = new Set(after.map((r) => r.role));
    m["f.lost"] = [...before.keys()].filter((r) => !roles.has(r)).length;
    m["f.dup"] = after.length - roles.size;
    m["f.moved"] = after.filter((r) =>
      before.get(r.role)?.port !== r.port
    ).length;

    // Kill the process owning the first `per` connections.
    const { watch } = await second.call("watch", {
      cmp: "le",
      n: total - victims,
    });
    await procs[0]!.w.kill();
    await second.call("await", { watch, timeoutMs: 5000 }, 30_000);
    // Settle: the count unchanged for 500 ms (at most 5 s).
    let last = (await second.call("count", {})).count;
    let stableSince = now();
    const settleBy = now() + 5000;
    while (now() < settleBy && now() - stableSince < 500) {
      await sleep(100);
      const c = (await second.call("count", {})).count;
      if (c !== last) {
        last = c;
        stableSince = now();
      }
    }
    const left: Rec[] = (await second.call("records", {})).records;
    const victim = (role: string) => {
      const conn = Number(/^rec(\d+)-/.exec(role)?.[1]);
      return conn < per;
    };
    m["f.dropped"] = total - left.length;
    const leftRoles = new Set(left.map((r) => r.role));
    const exact = left.length === total - victims &&
      left.every((r) => !victim(r.role)) &&
      [...before.keys()].filter((r) => !victim(r)).every((r) =>
        leftRoles.has(r)
      );
    m["f.exact"] = exact ? 1 : 0;
    return m;
  }, impl);
}
