/**
 * Figures of the etcd store beside the in-memory one, on loopback with one
 * real etcd member (Debian's etcd-server 3.4) unless said: registrations per
 * second with 50 clients over two servers, query latency from the local
 * view, the cross-server wake-up, the failover of a killed server's
 * clients, the server's heap per registration at 100,000, the time until
 * registrations succeed again after the etcd leader of three is killed,
 * etcd's requests per second with idle clients, and the floor: what a plain
 * etcd client gets from the same member with the same batches.
 *
 * ```sh
 * deno task bench:etcd            # the figures, as a Markdown table
 * deno task bench:etcd --quick    # small sizes
 * deno task bench:etcd --json     # one JSON object on stdout: { rows, notes }
 * deno task bench:etcd --only=regs,wake   # some figures: regs, query, wake,
 *                                         # failover, heap, idle, leader
 * deno task bench:etcd --only=regs --probe   # registrations with the port
 *                                            # probe on (default: off)
 * ```
 *
 * With `--json`, stdout holds only `{ "rows": [{ "figure", "memory",
 * "etcd" }, …], "notes": [string, …] }`, the rows of the Markdown table;
 * progress goes to stderr.
 *
 * @module
 */
import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import os from "node:os";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { connect, createServer } from "../mod.ts";
import type { Ports, Server, ServerOptions } from "../mod.ts";
import { createEtcdClient } from "../store/etcd/mod.ts";
import {
  etcdBinary,
  type EtcdCluster,
  etcdMissing,
  startEtcd,
} from "../tests/_etcd.ts";
import { redirect } from "../tests/_helpers.ts";
import { oursDenoLaunch, WorkerProc } from "./_proc.ts";
import type { ImplOptions } from "./_types.ts";

const quick = process.argv.includes("--quick");
const json = process.argv.includes("--json");
/** `--probe`: the registration figures with the port probe on. */
const probe = process.argv.includes("--probe");
/** `--only regs,wake,…`: just those figures (of FIGURES). */
const FIGURES = [
  "regs",
  "query",
  "wake",
  "failover",
  "heap",
  "idle",
  "leader",
] as const;
const onlyArg = process.argv.find((a) => a.startsWith("--only="))?.slice(7);
const only = new Set(onlyArg?.split(",") ?? FIGURES);
for (const f of only) {
  if (!(FIGURES as readonly string[]).includes(f)) {
    console.error(`bench:etcd: unknown figure "${f}" in --only (${FIGURES})`);
    process.exit(2);
  }
}
const HEAP_REGS = quick ? 10_000 : 100_000;
const LEADER_KILLS = quick ? 1 : 3;
const FLOOR_PUTS = quick ? 2_500 : 10_000;
const REGS_PER_CLIENT = quick ? 20 : 100;
const QUERIES = quick ? 500 : 5000;
const WAKES = quick ? 50 : 300;
const FAIL_CLIENTS = quick ? 50 : 200;
const FAIL_SERVICES = 5;
const IDLE = quick ? [10, 100] : [10, 100, 1000];

const fast = { reconnectDelay: 20, maxReconnectDelay: 100, probe: false };

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
}
const ms = (x: number) => `${x.toFixed(2)} ms`;

let prefixes = 0;
async function pair(
  etcd: EtcdCluster | undefined,
  n = 2,
): Promise<Server[]> {
  const prefix = `/bench${++prefixes}/`;
  const out: Server[] = [];
  for (let i = 0; i < n; i++) {
    const opts: ServerOptions = etcd === undefined
      ? {}
      : { etcd: { endpoints: etcd.endpoints, prefix } };
    const s = createServer({ ...opts, range: { "*": [10000, 60000] } });
    await s.listen(0, "127.0.0.1");
    out.push(s);
  }
  return out;
}

const client = (s: Server, opts = {}) =>
  connect("127.0.0.1", s.addr!.port, { ...fast, ...opts });

/**
 * 50 clients each register REGS_PER_CLIENT services: one after another
 * (each waits for the previous), or `atOnce`, all issued in one turn as in
 * row (a) of the suite (they travel as batches).
 */
async function registrations(
  etcd: EtcdCluster | undefined,
  atOnce = false,
): Promise<number> {
  const servers = await pair(etcd, etcd === undefined ? 1 : 2);
  const clients = Array.from(
    { length: 50 },
    (_, i) => client(servers[i % servers.length]!, { probe }),
  );
  await Promise.all(clients.map((c) => c.query("warm")));
  const t0 = performance.now();
  await Promise.all(clients.map(async (c, i) => {
    if (atOnce) {
      await Promise.all(
        Array.from(
          { length: REGS_PER_CLIENT },
          (_, k) => c.service(`r${i}-${k}`),
        ),
      );
    } else {
      for (let k = 0; k < REGS_PER_CLIENT; k++) await c.service(`r${i}-${k}`);
    }
  }));
  const rate = (50 * REGS_PER_CLIENT) / ((performance.now() - t0) / 1000);
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(servers.map((s) => s.close()));
  return rate;
}

async function queries(
  etcd: EtcdCluster | undefined,
): Promise<[number, number]> {
  const [s] = await pair(etcd, 1);
  const c = client(s!);
  for (let i = 0; i < 100; i++) await c.service(`q${i % 10}@1.0.${i}`);
  const times: number[] = [];
  for (let i = 0; i < QUERIES; i++) {
    const t0 = performance.now();
    await c.query(`q${i % 10}@1.x`);
    times.push(performance.now() - t0);
  }
  await c.close();
  await s!.close();
  return [pct(times, 0.5), pct(times, 0.99)];
}

async function wakeups(etcd: EtcdCluster): Promise<[number, number]> {
  const [a, b] = await pair(etcd, 2);
  const ca = client(a!);
  const cb = client(b!);
  await Promise.all([ca.query("warm"), cb.query("warm")]);
  const times: number[] = [];
  for (let i = 0; i < WAKES; i++) {
    const role = `w${i}`;
    const woken = cb.get(role).then(() => performance.now());
    await cb.query("sync"); // the get is waiting on B
    const t0 = performance.now();
    const port = await ca.service(role);
    times.push((await woken) - t0);
    await ca.free(port);
  }
  await ca.close();
  await cb.close();
  await a!.close();
  await b!.close();
  return [pct(times, 0.5), pct(times, 0.99)];
}

async function failover(etcd: EtcdCluster): Promise<[number, number, number]> {
  const prefix = `/bench-fail${++prefixes}/`;
  const cli = fileURLToPath(new URL("../cli.ts", import.meta.url));
  const child = spawn(process.execPath, [
    "run",
    "-A",
    cli,
    "0",
    "--host",
    "127.0.0.1",
    "--range",
    "10000-60000",
    "--etcd",
    etcd.endpoints.join(","),
    "--etcd-prefix",
    prefix,
  ], { stdio: ["ignore", "pipe", "inherit"] });
  const aPort = await new Promise<number>((resolve) => {
    let out = "";
    child.stdout!.on("data", (d) => {
      out += d;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
  });
  const exited = new Promise((r) => child.once("exit", r));
  const b = createServer({
    range: { "*": [10000, 60000] },
    etcd: { endpoints: etcd.endpoints, prefix },
  });
  await b.listen(0, "127.0.0.1");
  const to = { port: aPort };
  const clients: Ports[] = Array.from(
    { length: FAIL_CLIENTS },
    () => connect("127.0.0.1", aPort, { ...fast, transport: redirect(to) }),
  );
  const held = new Map<string, number>();
  await Promise.all(clients.map(async (c, i) => {
    for (let k = 0; k < FAIL_SERVICES; k++) {
      held.set(`f${i}-${k}`, await c.service(`f${i}-${k}`));
    }
  }));
  const t0 = performance.now();
  to.port = b.addr!.port;
  child.kill("SIGKILL");
  await exited;
  let back = 0;
  let lost = 0;
  let doubled = 0;
  while (true) {
    const rs = b.query();
    const ok = [...held].every(([role, port]) =>
      rs.some((r) => r.role === role && r.port === port)
    );
    if (ok || performance.now() - t0 > 10_000) {
      back = performance.now() - t0;
      lost = [...held].filter(([role, port]) =>
        !rs.some((r) =>
          r.role === role && r.port === port
        )
      ).length;
      doubled = rs.length - new Set(rs.map((r) => r.port)).size;
      break;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  await Promise.all(clients.map((c) => c.close()));
  await b.close();
  return [back, lost, doubled];
}

/** etcd's gRPC requests handled, from its /metrics. */
async function etcdRequests(etcd: EtcdCluster): Promise<number> {
  const text = await (await fetch(etcd.endpoints[0] + "/metrics")).text();
  let n = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("grpc_server_handled_total{")) {
      n += Number(line.split(" ").pop());
    }
  }
  return n;
}

async function idle(etcd: EtcdCluster, n: number): Promise<number> {
  const [s] = await pair(etcd, 1);
  const clients = Array.from({ length: n }, () => client(s!));
  await Promise.all(clients.map((c, i) => c.service(`idle${i}`)));
  await new Promise((r) => setTimeout(r, 1000));
  const before = await etcdRequests(etcd);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, quick ? 3000 : 6000));
  const rate = (await etcdRequests(etcd) - before) /
    ((performance.now() - t0) / 1000);
  await Promise.all(clients.map((c) => c.close()));
  await s!.close();
  return rate;
}

/**
 * The floor: a plain etcd client, no seaport, on the same member. Txns of
 * `batch` puts on absent keys (compared on mod revision 0, with a lease), two
 * in flight, while two watchers (the two servers' views) read every event.
 * And one txn at a time, timed until a second client's watch sees it.
 */
/**
 * CPU time (user + system, ms) a process has used, from `/proc` (Linux), or
 * `undefined` where it cannot be read.
 */
function cpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const hz = 100; // USER_HZ, 100 on every Linux build that matters here
    return (Number(f[11]) + Number(f[12])) * (1000 / hz);
  } catch {
    return undefined;
  }
}

async function floor(
  etcd: EtcdCluster,
  batch: number,
  inflight = 2,
): Promise<
  {
    puts: number;
    /** etcd's CPU per put, µs (Linux). */
    etcdUs: number | undefined;
    txn50: number;
    ev50: number;
    ev99: number;
  }
> {
  const c = createEtcdClient({ endpoints: etcd.endpoints });
  const other = createEtcdClient({ endpoints: etcd.endpoints });
  const prefix = `/floor${++prefixes}/`;
  const lease = (await c.lease.grant(60)).id;
  let onEvent: () => void = () => {};
  const watches = [c, other].map((cl) =>
    cl.watcher.watch(prefix, { prefix: true })
  );
  await Promise.all(watches.map((w) => w.ready));
  const reading = watches.map(async (w, i) => {
    for await (const _ of w) if (i === 1) onEvent();
  });
  const value = JSON.stringify({
    id: "0123abcd-1a",
    host: "127.0.0.1",
    port: 12345,
    role: "r12-34",
    env: "",
    session: crypto.randomUUID(),
    server: crypto.randomUUID(),
    ready: true,
    kind: "allocate",
  });
  let k = 0;
  const txnOf = (n: number) => {
    const keys = Array.from({ length: n }, () => `${prefix}127.0.0.1/${++k}`);
    return c.kv.txn({
      compare: keys.map((key) => ({
        key,
        target: "mod" as const,
        result: "=" as const,
        value: 0,
      })),
      success: keys.map((key) => ({ op: "put" as const, key, value, lease })),
    });
  };
  let sent = 0;
  const pid = etcd.members[0]!.pid;
  const cpu0 = cpuMs(pid);
  const t0 = performance.now();
  await Promise.all(Array.from({ length: inflight }, async () => {
    while (sent < FLOOR_PUTS) {
      sent += batch;
      await txnOf(batch);
    }
  }));
  const puts = sent / ((performance.now() - t0) / 1000);
  const cpu1 = cpuMs(pid);
  const etcdUs = cpu0 === undefined || cpu1 === undefined
    ? undefined
    : (cpu1 - cpu0) * 1000 / sent;
  const txns: number[] = [];
  const events: number[] = [];
  for (let i = 0; i < WAKES; i++) {
    const seen = new Promise<number>((r) =>
      onEvent = () => r(performance.now())
    );
    const t = performance.now();
    await txnOf(1);
    txns.push(performance.now() - t);
    events.push(await seen - t);
  }
  await Promise.all(watches.map((w) => w.close()));
  await Promise.all(reading);
  await c.lease.revoke(lease);
  await c.close();
  await other.close();
  return {
    puts,
    etcdUs,
    txn50: pct(txns, 0.5),
    ev50: pct(events, 0.5),
    ev99: pct(events, 0.99),
  };
}

/** A seaport worker process of `bench/main.ts`, run with --expose-gc. */
function worker(): WorkerProc {
  return new WorkerProc(oursDenoLaunch());
}

/**
 * Server heap per registration, measured as `bench/main.ts` measures it: a
 * server process of its own, `heapUsed` after `gc()` with `n` registrations
 * (one client process, 10 connections with hosts of their own, the probe
 * off) minus the same before. On etcd, also a second server whose view only
 * the watch feeds. Returns [the server registered through, the other].
 */
async function heap(
  etcd: EtcdCluster | undefined,
  n: number,
): Promise<[number, number | undefined]> {
  const server = worker();
  const viewer = etcd === undefined ? undefined : worker();
  const clients = worker();
  try {
    const options: ImplOptions = etcd === undefined ? {} : {
      etcd: { endpoints: etcd.endpoints, prefix: `/bench-heap${++prefixes}/` },
    };
    const { port } = await server.call("listen", { port: 0, options }, 60_000);
    await viewer?.call("listen", { port: 0, options }, 60_000);
    const base = await server.call("mem", {});
    const viewBase = await viewer?.call("mem", {});
    const conns = Math.max(1, Math.ceil(n / 10_000));
    await clients.call("connect", {
      port,
      n: conns,
      options: { probe: false },
      advertise: Array.from({ length: conns }, (_, i) => `10.99.0.${i}`),
    }, 60_000);
    const watches = await Promise.all(
      [server, viewer].map((w) => w?.call("watch", { cmp: "ge", n })),
    );
    const registering = clients.call(
      "register",
      { total: n, conns, offset: 0, kind: "svc" },
      600_000,
    );
    const done = await Promise.all(
      [server, viewer].map((w, i) =>
        w?.call(
          "await",
          { watch: watches[i]!.watch, timeoutMs: 600_000 },
          610_000,
        )
      ),
    );
    await registering;
    if (done.some((d) => d !== undefined && !d.reached)) {
      throw new Error(
        `The servers hold ${done.map((d) => d?.count)} of ${n} registrations`,
      );
    }
    const mem = await server.call("mem", {});
    const viewMem = await viewer?.call("mem", {});
    return [
      (mem.heapUsed - base.heapUsed) / n,
      viewMem && viewBase && (viewMem.heapUsed - viewBase.heapUsed) / n,
    ];
  } finally {
    await clients.kill();
    await viewer?.kill();
    await server.kill();
  }
}

/**
 * Kills the etcd leader of three members while registrations go on through
 * two servers: a new one every 10 ms on an idle connection (a new
 * connection when none is idle), so that requests held up by the election
 * (etcd answers those only at its timeout) do not hold up the next. The time from
 * the kill until a registration asked for after it succeeds. Median of
 * `LEADER_KILLS`.
 */
async function leaderKill(): Promise<{ ms: number; failed: number }> {
  await using etcd = await startEtcd({ members: 3 });
  const times: number[] = [];
  let failed = 0;
  for (let trial = 0; trial < LEADER_KILLS; trial++) {
    const servers = await pair(etcd, 2);
    const clients = Array.from(
      { length: 40 },
      (_, i) => client(servers[i % 2]!),
    );
    await Promise.all(clients.map((c) => c.query("warm")));
    const idle = new Set(clients);
    const pending = new Set<Promise<void>>();
    let killedAt = Infinity;
    let back = Infinity;
    let k = 0;
    const attempt = (c: Ports) => {
      idle.delete(c);
      const asked = performance.now();
      const p = c.service(`l${trial}-${++k}`).then(async (port) => {
        if (asked > killedAt) back = Math.min(back, performance.now());
        await c.free(port).catch(() => {}); // freed with the client at worst
      }, () => {
        failed++; // the election: UNAVAILABLE
      }).finally(() => {
        idle.add(c);
        pending.delete(p);
      });
      pending.add(p);
    };
    const ticker = setInterval(() => {
      let c = idle.values().next().value;
      if (c === undefined && clients.length < 1000) {
        c = client(servers[clients.length % 2]!);
        clients.push(c);
      }
      if (c !== undefined) attempt(c);
    }, 10);
    await new Promise((r) => setTimeout(r, 300));
    const leader = await etcd.leader();
    killedAt = performance.now();
    await leader.kill();
    const deadline = killedAt + 30_000;
    while (back === Infinity && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    clearInterval(ticker);
    await Promise.all(pending);
    times.push(back - killedAt);
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(servers.map((s) => s.close()));
    await leader.restart();
    await etcd.healthy();
  }
  return { ms: pct(times, 0.5), failed };
}

const loads = () =>
  os.loadavg().map((l) => l.toFixed(2)).join(", ") +
  ` (${os.cpus().length} cores)`;

if (import.meta.main) {
  if (etcdMissing) {
    console.error(`bench:etcd: ${etcdMissing}`);
    process.exit(1);
  }
  const version = spawnSync(etcdBinary!, ["--version"], { encoding: "utf8" })
    .stdout.split("\n")[0]?.trim() ?? "etcd";
  const notes: string[] = [
    `${version}, one member on loopback unless said (data in ${os.tmpdir()}; heartbeat 50 ms, election timeout 500 ms), servers and clients in the bench process unless said, the port probe ${
      probe ? "on for the registrations, else off" : "off"
    }${quick ? "; --quick sizes" : ""}`,
    `load average at the start: ${loads()}`,
  ];
  const rows: { figure: string; memory: string; etcd: string }[] = [];
  const say = (figure: string, memory: string, onEtcd: string) => {
    rows.push({ figure, memory, etcd: onEtcd });
    console.error(`${figure}: ${memory} | ${onEtcd}`);
  };
  {
    await using etcd = await startEtcd();
    const f = only.has("regs") || only.has("wake")
      ? await floor(etcd, 25)
      : undefined;
    if (only.has("regs")) {
      const regsMem = await registrations(undefined);
      const regsEtcd = await registrations(etcd);
      say(
        "registrations/s, 50 clients, each waiting for its previous (etcd: over two servers)",
        regsMem.toFixed(0),
        regsEtcd.toFixed(0),
      );
      const burstMem = await registrations(undefined, true);
      const burstEtcd = await registrations(etcd, true);
      say(
        `registrations/s, 50 clients issuing their ${REGS_PER_CLIENT} at once (batches; etcd: over two servers)`,
        burstMem.toFixed(0),
        burstEtcd.toFixed(0),
      );
      const us = (x: number | undefined) =>
        x === undefined ? "" : `, etcd CPU ${x.toFixed(0)} µs a put`;
      say(
        "floor: puts/s of a plain etcd client, txns of 25, two in flight, two watchers",
        "-",
        f!.puts.toFixed(0) + us(f!.etcdUs),
      );
      const big = await floor(etcd, 100, 4);
      say(
        `floor: the same, txns of 100, four in flight (etcd's CPU a put × 10,000/s = ${
          big.etcdUs === undefined ? "?" : (big.etcdUs / 100).toFixed(2)
        } of this machine's ${os.cpus().length} cores)`,
        "-",
        big.puts.toFixed(0) + us(big.etcdUs),
      );
    }
    if (only.has("query")) {
      const [qm50, qm99] = await queries(undefined);
      const [qe50, qe99] = await queries(etcd);
      say(
        "query p50 / p99 (etcd: the local view)",
        `${ms(qm50)} / ${ms(qm99)}`,
        `${ms(qe50)} / ${ms(qe99)}`,
      );
    }
    if (only.has("wake")) {
      const [w50, w99] = await wakeups(etcd);
      say(
        "cross-server wake-up p50 / p99 (register through A → get() on B answered)",
        "-",
        `${ms(w50)} / ${ms(w99)}`,
      );
      say(
        "floor: one txn → another client's watch event, p50 / p99 (txn alone p50)",
        "-",
        `${ms(f!.ev50)} / ${ms(f!.ev99)} (${ms(f!.txn50)})`,
      );
    }
    if (only.has("failover")) {
      const [back, lost, doubled] = await failover(etcd);
      say(
        `SIGKILL of a server with ${FAIL_CLIENTS} clients × ${FAIL_SERVICES} services: all back through the other`,
        "-",
        `${back.toFixed(0)} ms, lost ${lost}, doubled ${doubled}`,
      );
    }
    if (only.has("heap")) {
      const [heapMem] = await heap(undefined, HEAP_REGS);
      const [heapEtcd, heapView] = await heap(etcd, HEAP_REGS);
      say(
        `server heap per registration at ${
          HEAP_REGS.toLocaleString("en")
        } (a server process, after gc(); etcd: the server registered through / another, fed by the watch)`,
        `${heapMem.toFixed(0)} B`,
        `${heapEtcd.toFixed(0)} B / ${heapView?.toFixed(0)} B`,
      );
    }
    for (const n of only.has("idle") ? IDLE : []) {
      say(
        `etcd requests/s with ${n} idle clients`,
        "-",
        (await idle(etcd, n)).toFixed(1),
      );
    }
  }
  if (only.has("leader")) {
    const lk = await leaderKill();
    say(
      "three members, leader killed: until registrations succeed again (median)",
      "-",
      `${lk.ms.toFixed(0)} ms (${lk.failed} failed meanwhile)`,
    );
  }
  notes.push(`load average at the end: ${loads()}`);
  if (json) {
    console.log(JSON.stringify({ rows, notes }));
  } else {
    console.log("| figure | in memory | on etcd |");
    console.log("| ------ | --------- | ------- |");
    for (const r of rows) {
      console.log(`| ${r.figure} | ${r.memory} | ${r.etcd} |`);
    }
    console.log();
    for (const n of notes) console.log(`- ${n}`);
  }
}
