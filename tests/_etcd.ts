/**
 * Real etcd members for tests: one member or a three-member cluster on
 * loopback, with free ports and temporary data directories, stopped
 * (SIGSTOP/SIGCONT), killed (SIGKILL) and restarted by PID. Disposable: dispose
 * kills every member and removes the directories.
 *
 * Tests skip with {@linkcode etcdMissing} as the reason where there is no
 * etcd binary (`.ci/run` installs Debian's `etcd-server`).
 *
 * @module
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import process from "node:process";

/** The etcd binary: $ETCD_BIN, else `etcd` on PATH, else /usr/bin/etcd. */
export const etcdBinary: string | undefined = findEtcd();

/** Why etcd tests cannot run here, or `false` when they can. */
export const etcdMissing: string | false = etcdBinary === undefined
  ? "no etcd binary (not on PATH, not /usr/bin/etcd; install etcd-server)"
  : false;

function findEtcd(): string | undefined {
  const fromEnv = process.env.ETCD_BIN;
  if (fromEnv !== undefined && existsSync(fromEnv)) return fromEnv;
  const dirs = (process.env.PATH ?? "").split(delimiter).filter(Boolean);
  for (const dir of [...dirs, "/usr/bin"]) {
    const candidate = join(dir, "etcd");
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** TLS for the members' client URLs. */
export interface EtcdTls {
  /** Path of the server certificate (PEM). */
  certFile: string;
  /** Path of its key (PEM). */
  keyFile: string;
}

/** Options of {@linkcode startEtcd}. */
export interface StartOptions {
  /** How many members (default 1). */
  members?: number;
  /** Serve clients over TLS with this certificate. */
  tls?: EtcdTls;
  /** How long to wait for every member to be healthy (default 15000 ms). */
  timeout?: number;
  /** More flags for every member (e.g. `--auth-token-ttl=1`). */
  args?: string[];
}

/** One etcd member. */
export interface EtcdMember {
  /** Its name (`m0`, `m1`, …). */
  readonly name: string;
  /** Its client URL. */
  readonly clientUrl: string;
  /** Its process ID now (a new one after restart()). */
  readonly pid: number;
  /** Whether its process runs (stopped or not). */
  readonly running: boolean;
  /**
   * SIGSTOP, and waits until every thread of it has stopped (at most `ms`,
   * default 5000): it stops answering, its sockets stay open. kill(2) only
   * queues the signal; until each thread of etcd has been scheduled and seen
   * it, a member goes on working (on a busy machine for tens of ms) and can
   * still acknowledge a raft append.
   */
  stop(ms?: number): Promise<void>;
  /** SIGCONT. */
  cont(): void;
  /** SIGKILL, and waits until it exited. */
  kill(): Promise<void>;
  /** Starts it again on the same ports and data (after kill()). */
  restart(): Promise<void>;
  /** The last lines of its log. */
  log(): string;
}

/** Members started by {@linkcode startEtcd}. */
export interface EtcdCluster extends AsyncDisposable {
  /** The members, in order. */
  readonly members: readonly EtcdMember[];
  /** Their client URLs, in order. */
  readonly endpoints: string[];
  /**
   * The member the running ones agree is the leader (waits for an election
   * up to `ms`).
   */
  leader(ms?: number): Promise<EtcdMember>;
  /** Waits until every given member (default: all) says it is healthy. */
  healthy(members?: readonly EtcdMember[], ms?: number): Promise<void>;
  /** Kills every member and removes the data directories. */
  close(): Promise<void>;
}

/** A free loopback TCP port, bound once and released. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

class Member implements EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly logFile: string;
  #args: string[];
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #running = false;

  constructor(
    name: string,
    clientUrl: string,
    peerUrl: string,
    args: string[],
    logFile: string,
  ) {
    this.name = name;
    this.clientUrl = clientUrl;
    this.peerUrl = peerUrl;
    this.#args = args;
    this.logFile = logFile;
  }

  get pid(): number {
    return this.#child?.pid ?? -1;
  }

  get running(): boolean {
    return this.#running;
  }

  start(): void {
    const child = spawn(etcdBinary!, this.#args, { stdio: "ignore" });
    this.#child = child;
    this.#running = true;
    this.#exited = new Promise((resolve) => {
      child.once("exit", () => {
        if (this.#child === child) this.#running = false;
        resolve();
      });
      child.once("error", () => {
        if (this.#child === child) this.#running = false;
        resolve();
      });
    });
  }

  async stop(ms = 5_000): Promise<void> {
    process.kill(this.pid, "SIGSTOP");
    const deadline = Date.now() + ms;
    while (true) {
      const states = threadStates(this.pid);
      if (states === undefined) {
        throw new Error(`etcd member ${this.name} exited:\n${this.log()}`);
      }
      if (states.every((s) => s === "T")) return;
      if (Date.now() > deadline) {
        throw new Error(
          `etcd member ${this.name} (PID ${this.pid}) did not stop within ${ms} ms: thread states ${
            states.join("")
          }`,
        );
      }
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  cont(): void {
    process.kill(this.pid, "SIGCONT");
  }

  async kill(): Promise<void> {
    if (!this.#running) return;
    try {
      process.kill(this.pid, "SIGKILL");
    } catch {
      // already gone
    }
    await this.#exited;
  }

  async restart(): Promise<void> {
    await this.kill();
    this.start();
  }

  log(): string {
    return this.fullLog().split("\n").slice(-15).join("\n") || "(no log)";
  }

  fullLog(): string {
    try {
      return readFileSync(this.logFile, "utf8");
    } catch {
      return "";
    }
  }
}

/**
 * The state of each thread of process `pid` ("T": stopped, "R": running, "S":
 * sleeping, …), from /proc on Linux, else the process's own from `ps`;
 * undefined when it has gone.
 */
function threadStates(pid: number): string[] | undefined {
  if (existsSync("/proc/self/task")) {
    const dir = `/proc/${pid}/task`;
    let tids: string[];
    try {
      tids = readdirSync(dir);
    } catch {
      return undefined;
    }
    const states = tids.flatMap((tid) => {
      try {
        // "tid (comm) S …": the state follows the last ")".
        const stat = readFileSync(`${dir}/${tid}/stat`, "utf8");
        const state = stat.charAt(stat.lastIndexOf(")") + 2);
        return state === "Z" || state === "X" ? [] : [state];
      } catch {
        return []; // the thread ended
      }
    });
    return states.length === 0 ? undefined : states;
  }
  const ps = spawnSync("ps", ["-o", "state=", "-p", String(pid)], {
    encoding: "utf8",
  });
  const state = ps.status === 0 ? ps.stdout.trim().charAt(0) : "";
  return state === "" || state === "Z" ? undefined : [state];
}

/**
 * Starts `members` etcd members on free loopback ports, as one cluster, and
 * waits until all are healthy. A port taken between choosing and binding
 * (another process) makes it try again with new ports.
 *
 * @throws When etcd is missing or the members do not become healthy.
 */
export async function startEtcd(
  options: StartOptions = {},
): Promise<EtcdCluster> {
  if (etcdBinary === undefined) throw new Error(etcdMissing || "no etcd");
  const n = options.members ?? 1;
  const timeout = options.timeout ?? 15_000;
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const base = mkdtempSync(join(tmpdir(), "seaport-etcd-"));
    const cluster = await create(base, n, options.tls, options.args ?? []);
    try {
      await cluster.healthy(undefined, timeout);
      return cluster;
    } catch (err) {
      lastError = err;
      const inUse = cluster.members.some((m) =>
        /address already in use/.test(m.log())
      );
      await cluster.close();
      if (!inUse) throw err;
    }
  }
  throw lastError;
}

async function create(
  base: string,
  n: number,
  tls: EtcdTls | undefined,
  extra: readonly string[],
): Promise<EtcdCluster> {
  const ports: number[] = [];
  while (ports.length < 2 * n) {
    const p = await freePort();
    if (!ports.includes(p)) ports.push(p);
  }
  const scheme = tls === undefined ? "http" : "https";
  const names = Array.from({ length: n }, (_, i) => `m${i}`);
  const peers = names.map((name, i) =>
    `${name}=http://127.0.0.1:${ports[2 * i + 1]}`
  );
  const token = `seaport-test-${Math.random().toString(36).slice(2)}`;
  const members = names.map((name, i) => {
    const clientUrl = `${scheme}://127.0.0.1:${ports[2 * i]}`;
    const peerUrl = `http://127.0.0.1:${ports[2 * i + 1]}`;
    const logFile = join(base, `${name}.log`);
    const args = [
      `--name=${name}`,
      `--data-dir=${join(base, name)}`,
      `--listen-client-urls=${clientUrl}`,
      `--advertise-client-urls=${clientUrl}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=${peers.join(",")}`,
      "--initial-cluster-state=new",
      `--initial-cluster-token=${token}`,
      // Short raft timings: elections in about half a second.
      "--heartbeat-interval=50",
      "--election-timeout=500",
      "--logger=zap",
      `--log-outputs=${logFile}`,
    ];
    if (tls !== undefined) {
      args.push(`--cert-file=${tls.certFile}`, `--key-file=${tls.keyFile}`);
    }
    args.push(...extra);
    return new Member(name, clientUrl, peerUrl, args, logFile);
  });
  for (const m of members) m.start();
  const cluster: EtcdCluster = {
    members,
    endpoints: members.map((m) => m.clientUrl),
    async healthy(which: readonly EtcdMember[] = members, ms = 15_000) {
      const deadline = Date.now() + ms;
      for (const m of which) {
        while (!(await isHealthy(m as Member, tls))) {
          // One member that exited (a port taken) keeps the others from
          // a quorum: say so at once rather than at the deadline.
          const dead = which.find((x) => !x.running);
          if (dead !== undefined) {
            throw new Error(`etcd member ${dead.name} exited:\n${dead.log()}`);
          }
          if (Date.now() > deadline) {
            throw new Error(
              `Timed out after ${ms} ms waiting for etcd member ${m.name} to be healthy:\n${m.log()}`,
            );
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    },
    async leader(ms = 10_000) {
      const deadline = Date.now() + ms;
      while (true) {
        const seen = await Promise.all(members.map((m) => statusOf(m)));
        const leaders = new Set(
          seen.flatMap((s) =>
            s === undefined || s.leader === "0" ? [] : [s.leader]
          ),
        );
        if (leaders.size === 1) {
          const [id] = leaders;
          const i = seen.findIndex((s) => s?.member === id);
          if (i >= 0) return members[i]!;
        }
        if (Date.now() > deadline) {
          throw new Error(
            `Timed out after ${ms} ms waiting for an etcd leader`,
          );
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async close() {
      for (const m of members) {
        if (m.running) {
          try {
            m.cont();
          } catch {
            // gone
          }
        }
      }
      await Promise.all(members.map((m) => m.kill()));
      rmSync(base, { recursive: true, force: true });
    },
    [Symbol.asyncDispose]() {
      return cluster.close();
    },
  };
  return cluster;
}

/** Requests to the members themselves, for the harness (not the client). */
async function probe(
  m: EtcdMember,
  path: string,
  body?: string,
): Promise<Response | undefined> {
  if (!m.running) return undefined;
  try {
    return await fetch(m.clientUrl + path, {
      method: body === undefined ? "GET" : "POST",
      ...(body === undefined ? {} : { body }),
      signal: AbortSignal.timeout(500),
    });
  } catch {
    return undefined;
  }
}

async function isHealthy(
  m: Member,
  tls: EtcdTls | undefined,
): Promise<boolean> {
  // The harness does not verify TLS members' certificates (the client under
  // test does): it waits for the line etcd logs once it serves clients.
  if (tls !== undefined) {
    return m.running && /serving client traffic securely/.test(m.fullLog());
  }
  const res = await probe(m, "/health");
  if (res === undefined) return false;
  const text = await res.text().catch(() => "");
  return res.ok && /"health":\s*"true"/.test(text);
}

async function statusOf(
  m: EtcdMember,
): Promise<{ member: string; leader: string } | undefined> {
  const res = await probe(m, "/v3/maintenance/status", "{}");
  if (res === undefined) return undefined;
  try {
    const s = await res.json() as {
      header?: { member_id?: string };
      leader?: string;
    };
    return { member: s.header?.member_id ?? "", leader: s.leader ?? "0" };
  } catch {
    return undefined;
  }
}
