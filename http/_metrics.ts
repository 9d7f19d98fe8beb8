/**
 * The Prometheus text exposition format (version 0.0.4), written by hand: a
 * few families of gauges, counters and one histogram do not need a client
 * library. Names follow Prometheus' conventions (`seaport_` prefix, base
 * units, `_total` on counters); the tests check the output with
 * `promtool check metrics`.
 *
 * @module
 */
import process from "node:process";
import { OPERATIONS } from "../protocol.ts";
import {
  DEFAULT_RANGE,
  type RangeOption,
  type ServiceRecord,
} from "../registry.ts";
import type { Histogram, ServerStats } from "../_stats.ts";
import type { StoreState } from "./mod.ts";
import { VERSION } from "../version.ts";

/** The numbers `/metrics` reports, gathered at scrape time. */
export interface MetricsInput {
  records: readonly ServiceRecord[];
  range: RangeOption;
  connections: number;
  waitingGets: number;
  stats: ServerStats;
  events: ReadonlyMap<string, number>;
  index: number;
  http: {
    requests: ReadonlyMap<string, number>;
    blocking: number;
    streams: number;
  };
  startTime: number;
  store: StoreState;
}

type Labels = Record<string, string>;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function labels(l: Labels | undefined): string {
  if (l === undefined) return "";
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

function num(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

/** Writes metric families in the text format. */
class Writer {
  #out: string[] = [];

  family(
    name: string,
    type: "gauge" | "counter" | "histogram",
    help: string,
    samples: Iterable<[Labels | undefined, number]>,
  ): void {
    this.#out.push(`# HELP ${name} ${help.replace(/\\/g, "\\\\")}`);
    this.#out.push(`# TYPE ${name} ${type}`);
    for (const [l, v] of samples) {
      this.#out.push(`${name}${labels(l)} ${num(v)}`);
    }
  }

  histogram(name: string, help: string, h: Histogram): void {
    this.#out.push(`# HELP ${name} ${help}`);
    this.#out.push(`# TYPE ${name} histogram`);
    let cumulative = 0;
    h.bounds.forEach((b, i) => {
      cumulative += h.counts[i]!;
      this.#out.push(`${name}_bucket{le="${num(b)}"} ${cumulative}`);
    });
    this.#out.push(`${name}_bucket{le="+Inf"} ${h.count}`);
    this.#out.push(`${name}_sum ${num(h.sum)}`);
    this.#out.push(`${name}_count ${h.count}`);
  }

  toString(): string {
    return this.#out.join("\n") + "\n";
  }
}

function counted(
  keys: Iterable<string>,
  counts: ReadonlyMap<string, number>,
  label: string,
): [Labels, number][] {
  const all = new Set([...keys, ...counts.keys()]);
  return [...all].sort().map((k) => [{ [label]: k }, counts.get(k) ?? 0]);
}

/** The metrics page. */
export function metrics(m: MetricsInput): string {
  const w = new Writer();
  w.family(
    "seaport_info",
    "gauge",
    "The seaport version and store, as labels",
    [[{
      version: VERSION,
      store: m.store.kind,
    }, 1]],
  );
  if (m.store.kind === "etcd") {
    w.family(
      "seaport_etcd_reachable",
      "gauge",
      "1 when etcd answered the last lease keep-alive, else 0",
      [[undefined, m.store.reachable ? 1 : 0]],
    );
    w.family(
      "seaport_etcd_watch_silence_seconds",
      "gauge",
      "Seconds since the etcd watch last delivered a change or progress notice: how stale the view can be",
      [[
        undefined,
        m.store.lastHeard === 0 ? 0 : (Date.now() - m.store.lastHeard) / 1000,
      ]],
    );
    w.family(
      "seaport_etcd_resyncs_total",
      "counter",
      "Times the view was read again after a broken or compacted watch",
      [[undefined, m.store.resyncs]],
    );
  }
  const byRole = new Map<string, [Labels, number]>();
  const used = new Map<string, number>();
  for (const r of m.records) {
    const key = JSON.stringify([r.env, r.role]);
    const entry = byRole.get(key) ?? [{ env: r.env, role: r.role }, 0];
    entry[1]++;
    byRole.set(key, entry);
    const [low, high] = rangeOf(m.range, r.host);
    if (r.port >= low && r.port <= high) {
      used.set(r.host, (used.get(r.host) ?? 0) + 1);
    }
  }
  w.family(
    "seaport_registrations",
    "gauge",
    "Visible registrations by environment and role",
    [...byRole.values()],
  );
  const hosts = new Set([
    ...Object.keys(m.range).filter((h) => h !== "*"),
    ...used.keys(),
  ]);
  const hostLabels = (h: string): Labels => {
    const [low, high] = rangeOf(m.range, h);
    return { host: h, range: `${low}-${high}` };
  };
  const sorted = [...hosts].sort();
  w.family(
    "seaport_ports_used",
    "gauge",
    "Ports of the host's range held by visible registrations",
    sorted.map((h) => [hostLabels(h), used.get(h) ?? 0]),
  );
  w.family(
    "seaport_ports_free",
    "gauge",
    "Ports of the host's range not held by visible registrations",
    sorted.map((h) => {
      const [low, high] = rangeOf(m.range, h);
      return [hostLabels(h), high - low + 1 - (used.get(h) ?? 0)];
    }),
  );
  w.family(
    "seaport_connections",
    "gauge",
    "Open client connections",
    [[undefined, m.connections]],
  );
  w.family(
    "seaport_requests_total",
    "counter",
    "Protocol requests received, by operation",
    counted(OPERATIONS, m.stats.requests, "op"),
  );
  w.family(
    "seaport_errors_total",
    "counter",
    "Error answers sent to clients, by code",
    counted([], m.stats.errors, "code"),
  );
  w.family(
    "seaport_registrations_lost_total",
    "counter",
    "Registrations of this server's connections another's change took away, by reason",
    counted(["assume", "evict"], m.stats.lost, "reason"),
  );
  w.family(
    "seaport_waiting_gets",
    "gauge",
    "Protocol gets waiting for a match",
    [[undefined, m.waitingGets]],
  );
  w.histogram(
    "seaport_wakeup_latency_seconds",
    "Time from receiving the change that satisfied a waiting get to answering it",
    m.stats.wakeups,
  );
  w.family(
    "seaport_events_total",
    "counter",
    "Registry events, by type",
    counted(["allocate", "assume", "free"], m.events, "type"),
  );
  w.family(
    "seaport_change_index",
    "gauge",
    "The change index (X-Seaport-Index): events since the server started",
    [[undefined, m.index]],
  );
  w.family(
    "seaport_http_requests_total",
    "counter",
    "HTTP requests answered, by route and status code",
    [...m.http.requests].sort().map(([k, v]) => {
      const [route, code] = JSON.parse(k) as [string, string];
      return [{ route, code }, v];
    }),
  );
  w.family(
    "seaport_http_blocking_requests",
    "gauge",
    "HTTP requests waiting (wait or index)",
    [[undefined, m.http.blocking]],
  );
  w.family(
    "seaport_http_event_streams",
    "gauge",
    "Open HTTP event streams",
    [[undefined, m.http.streams]],
  );
  const mem = memory();
  if (mem !== undefined) {
    w.family(
      "process_resident_memory_bytes",
      "gauge",
      "Resident memory size in bytes",
      [[undefined, mem.rss]],
    );
    w.family(
      "process_heap_bytes",
      "gauge",
      "JavaScript heap in use, in bytes",
      [[undefined, mem.heapUsed]],
    );
  }
  const cpu = cpuSeconds();
  if (cpu !== undefined) {
    w.family(
      "process_cpu_seconds_total",
      "counter",
      "User and system CPU time spent in seconds",
      [[undefined, cpu]],
    );
  }
  w.family(
    "seaport_start_time_seconds",
    "gauge",
    "When the server started listening, in seconds since the epoch",
    [[undefined, Math.floor(m.startTime / 1000)]],
  );
  return w.toString();
}

function rangeOf(range: RangeOption, host: string): readonly [number, number] {
  return range[host] ?? range["*"] ?? DEFAULT_RANGE;
}

function memory(): { rss: number; heapUsed: number } | undefined {
  try {
    const m = process.memoryUsage();
    return { rss: m.rss, heapUsed: m.heapUsed };
  } catch {
    return undefined;
  }
}

function cpuSeconds(): number | undefined {
  try {
    const c = process.cpuUsage();
    return (c.user + c.system) / 1e6;
  } catch {
    return undefined;
  }
}
