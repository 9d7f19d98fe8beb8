/**
 * Figures of the etcd store beside the in-memory one, on loopback with one
 * real etcd member (Debian's etcd-server 3.4): registrations per second with
 * 50 clients over two servers, query latency from the local view, the
 * cross-server wake-up, the failover of a killed server's clients, and
 * etcd's requests per second with idle clients.
 *
 * ```sh
 * deno task bench:etcd            # the figures, as a Markdown table
 * deno task bench:etcd --quick    # small sizes
 * ```
 *
 * @module
 */
import { spawn } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { connect, createServer } from "../mod.ts";
import type { Ports, Server, ServerOptions } from "../mod.ts";
import { type EtcdCluster, etcdMissing, startEtcd } from "../tests/_etcd.ts";
import { defaultTransport, type Transport } from "../transport.ts";

const quick = process.argv.includes("--quick");
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

async function registrations(etcd: EtcdCluster | undefined): Promise<number> {
  const servers = await pair(etcd, etcd === undefined ? 1 : 2);
  const clients = Array.from(
    { length: 50 },
    (_, i) => client(servers[i % servers.length]!),
  );
  await Promise.all(clients.map((c) => c.query("warm")));
  const t0 = performance.now();
  await Promise.all(clients.map(async (c, i) => {
    for (let k = 0; k < REGS_PER_CLIENT; k++) await c.service(`r${i}-${k}`);
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

function redirect(to: { port: number }): Transport {
  const t = defaultTransport();
  return {
    name: t.name,
    listen: (ep, tls) => t.listen(ep, tls),
    connect: (ep, tls) => t.connect({ ...ep, port: to.port }, tls),
  };
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

if (import.meta.main) {
  if (etcdMissing) {
    console.error(`bench:etcd: ${etcdMissing}`);
    process.exit(1);
  }
  await using etcd = await startEtcd();
  const rows: [string, string, string][] = [];
  const say = (what: string, memory: string, onEtcd: string) => {
    rows.push([what, memory, onEtcd]);
    console.error(`${what}: ${memory} | ${onEtcd}`);
  };
  const regsMem = await registrations(undefined);
  const regsEtcd = await registrations(etcd);
  say(
    "registrations/s, 50 clients (etcd: over two servers)",
    regsMem.toFixed(0),
    regsEtcd.toFixed(0),
  );
  const [qm50, qm99] = await queries(undefined);
  const [qe50, qe99] = await queries(etcd);
  say(
    "query p50 / p99 (etcd: the local view)",
    `${ms(qm50)} / ${ms(qm99)}`,
    `${ms(qe50)} / ${ms(qe99)}`,
  );
  const [w50, w99] = await wakeups(etcd);
  say(
    "cross-server wake-up p50 / p99 (register through A → get() on B answered)",
    "-",
    `${ms(w50)} / ${ms(w99)}`,
  );
  const [back, lost, doubled] = await failover(etcd);
  say(
    `SIGKILL of a server with ${FAIL_CLIENTS} clients × ${FAIL_SERVICES} services: all back through the other`,
    "-",
    `${back.toFixed(0)} ms, lost ${lost}, doubled ${doubled}`,
  );
  for (const n of IDLE) {
    say(
      `etcd requests/s with ${n} idle clients`,
      "-",
      (await idle(etcd, n)).toFixed(1),
    );
  }
  console.log("| figure | in memory | on etcd |");
  console.log("| ------ | --------- | ------- |");
  for (const [a, b, c] of rows) console.log(`| ${a} | ${b} | ${c} |`);
}
