/**
 * The messages between the benchmark orchestrator (`main.ts`) and its worker
 * processes (`_ours_worker.ts`, `_theirs_worker.cjs`). A worker reads one JSON
 * request per line on stdin and writes one JSON reply per line on stdout;
 * stderr is for diagnostics. Both workers implement every command.
 *
 * Times are milliseconds on a clock shared by every process on the machine:
 * `performance.timeOrigin + performance.now()`.
 *
 * @module
 */

/** A request to a worker. */
export interface WorkerRequest {
  /** Echoed in the reply. */
  id: number;
  /** The command name, a key of {@linkcode Commands}. */
  cmd: keyof Commands;
  /** The command's arguments. */
  args: unknown;
}

/** A worker's reply. */
export type WorkerReply =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: string };

/** Server and client options passed through to the implementation. */
export interface ImplOptions {
  /** Heartbeat interval in ms (only where the implementation has one). */
  heartbeat?: number;
  /** Milliseconds without a heartbeat before a peer is dropped. */
  timeout?: number;
  /** Ours: check that an allocated port can be bound (default true). */
  probe?: boolean;
  /** Ours, server: keep the registry in etcd (`bench/etcd.ts`). */
  etcd?: { endpoints: string[]; prefix: string };
}

/** Which names `register` uses. */
export type NameKind =
  /** `svc{i%100}@{m%3}.{floor(m/3)%10}.{m%7}`, m = floor(i/100). */
  | "svc"
  /** `rec{conn}-{j}@1.0.0`: registration j of global connection `conn`. */
  | "rec";

/** A latency summary in microseconds. */
export interface Latency {
  /** Samples taken. */
  n: number;
  /** Median. */
  p50: number;
  /** 99th percentile. */
  p99: number;
  /** Mean. */
  mean: number;
  /** Maximum. */
  max: number;
}

/** CPU time used by a process, in microseconds. */
export interface Cpu {
  /** User time. */
  user: number;
  /** System time. */
  system: number;
}

/** Memory of a process after garbage collection, in bytes. */
export interface Mem {
  /** V8 heap in use. */
  heapUsed: number;
  /** Resident set size. */
  rss: number;
}

/** A registration as seen by a server, for correctness checks. */
export interface Rec {
  /** `name@version`. */
  role: string;
  /** The host. */
  host: string;
  /** The port. */
  port: number;
}

/** A threshold on the server's registration count. */
export interface WatchSpec {
  /** `ge`: count >= n; `le`: count <= n. */
  cmp: "ge" | "le";
  /** The threshold. */
  n: number;
}

/** Every command: its arguments and its result. */
export interface Commands {
  // ---- any worker ----
  /** The worker's clock, for a sanity check of the shared clock. */
  clock: { args: Record<never, never>; result: { t: number } };
  /** Starts the CPU profiler (node:inspector). */
  profileStart: { args: Record<never, never>; result: Record<never, never> };
  /** Stops the CPU profiler and writes a `.cpuprofile`. */
  profileStop: { args: { path: string }; result: Record<never, never> };

  // ---- server role ----
  /** Creates a server and listens on 127.0.0.1. */
  listen: {
    args: { port: number; options: ImplOptions; watch?: WatchSpec };
    result: { port: number; t: number; cpu: Cpu; watch?: number };
  };
  /** Arms a watch on the registration count; answers at once. */
  watch: { args: WatchSpec; result: { watch: number; count: number } };
  /** Waits for an armed watch; `t` is when the count crossed it. */
  await: {
    args: { watch: number; timeoutMs: number };
    result: {
      reached: boolean;
      t: number;
      /** When the count first changed after the watch was armed. */
      tFirst: number | undefined;
      count: number;
      cpu: Cpu;
    };
  };
  /** The current registration count (kept from server events). */
  count: { args: Record<never, never>; result: { count: number; t: number } };
  /** Memory after a full garbage collection. */
  mem: { args: Record<never, never>; result: Mem };
  /** CPU time used so far. */
  cpu: { args: Record<never, never>; result: Cpu };
  /** Every registration the server holds. */
  records: { args: Record<never, never>; result: { records: Rec[] } };

  // ---- client role ----
  /** Opens `n` connections and waits until each is up (and synced). */
  connect: {
    args: {
      port: number;
      n: number;
      options: ImplOptions;
      /** Per connection: the host to register under (ours); "" for none. */
      advertise?: string[];
    };
    result: { t: number };
  };
  /**
   * Registers names `0..total-1`, name i on global connection `i % conns`,
   * taking those of this worker's connections (`offset` is the global index
   * of its first one). Pipelined: every call is made before any is awaited.
   */
  register: {
    args: { total: number; conns: number; offset: number; kind: NameKind };
    result: { t0: number; tIssued: number; tDone: number; n: number };
  };
  /**
   * Sequential `query("svc{k%100}@1.x")` on the first connection, or with
   * `exact` `query("svc{k%100}@1.0.1")`: one version, so the answer stays a
   * few records whatever the registry's size.
   */
  query: {
    args: {
      count: number;
      warmup: number;
      timeLimitMs: number;
      exact?: boolean;
    };
    result: Latency & { records: number };
  };
  /**
   * Wake-up trials: connection 0 waits in `get("wake{k}@1")`, connection 1
   * registers `wake{k}@1.0.0`; from the register call to the get callback.
   */
  wake: {
    args: { trials: number; warmup: number; timeLimitMs: number };
    result: Latency;
  };
  /** A raw TCP echo server on this runtime's own sockets (no seaport). */
  echoListen: { args: Record<never, never>; result: { port: number } };
  /**
   * Sequential round trips of one request-sized line through the echo
   * server: the floor under any request and reply, (b) and (c) included.
   */
  echo: {
    args: { port: number; count: number; warmup: number };
    result: Latency;
  };
}

/** The arguments of a command. */
export type ArgsOf<K extends keyof Commands> = Commands[K]["args"];
/** The result of a command. */
export type ResultOf<K extends keyof Commands> = Commands[K]["result"];

/** The name of registration `i` of kind `kind` over `conns` connections. */
export function nameOf(kind: NameKind, i: number, conns: number): string {
  if (kind === "rec") return `rec${i % conns}-${Math.floor(i / conns)}@1.0.0`;
  const m = Math.floor(i / 100);
  return `svc${i % 100}@${m % 3}.${Math.floor(m / 3) % 10}.${m % 7}`;
}

/** Summarises latency samples given in microseconds. */
export function summarize(samples: number[]): Latency {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  const sum = s.reduce((a, b) => a + b, 0);
  return {
    n: s.length,
    p50: at(0.5) ?? NaN,
    p99: at(0.99) ?? NaN,
    mean: s.length === 0 ? NaN : sum / s.length,
    max: s[s.length - 1] ?? NaN,
  };
}
