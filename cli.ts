/**
 * The `seaport` command line: serve a registry, show, query and wait for
 * services, watch its events, register an already running service, free a
 * registration, and run a command as a supervised service.
 *
 * ```sh
 * seaport 9090
 * seaport localhost:9090 service web@1.2.3 -- node server.js
 * seaport localhost:9090 query web@1.2.x
 * ```
 *
 * Run it with `deno run -A jsr:@seaport/seaport/cli`, `npx seaport`, or the
 * single binary (`deno task binary`). See the README for every command.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import semver from "npm:semver@7.8.6";
import {
  AuthError,
  ConnectionError,
  createServer,
  hostPort,
  type Ports,
  RegistryError,
  seaport,
  type ServerOptions,
  type ServiceRecord,
  TimeoutError,
} from "./mod.ts";
import { supervise, type Supervision } from "./_supervisor.ts";
import {
  completion,
  parse,
  type Parsed,
  parseService,
  usage,
  UsageError,
} from "./_args.ts";
import type { LostReason } from "./registry.ts";
import { runtimeVersion } from "./transport.ts";

/** Where {@linkcode main} writes and what it reads; every field is optional. */
export interface Io {
  /** Writes to standard output. Default: `process.stdout`. */
  stdout?: (text: string) => void;
  /** Writes to standard error. Default: `process.stderr`. */
  stderr?: (text: string) => void;
  /**
   * The environment: `SEAPORT_SECRET`, and what a supervised command gets.
   * Default: `process.env`.
   */
  env?: Readonly<Record<string, string | undefined>>;
  /** Aborting it stops a running server, service or watch, as SIGTERM does. */
  signal?: AbortSignal;
  /**
   * Whether standard output is a terminal (`show` prints a table, `watch`
   * text). Default: `process.stdout.isTTY`.
   */
  tty?: boolean;
}

type Out = Required<Omit<Io, "signal">> & { signal: AbortSignal | undefined };
type StopSignal = "SIGINT" | "SIGTERM";

/** How often a start-up that cannot reach the server says so, in ms. */
const NAG_EVERY = 5000;

/**
 * Runs the seaport command line with `args` (without the program name).
 *
 * @param args The arguments, e.g. `["localhost:9090", "query", "web@1.x"]`.
 * @param io Writers, environment and a stop signal; defaults to the process's.
 * @returns The exit code: 0 success, 1 failure, 2 bad usage.
 *
 * @example Printing the version
 * ```ts
 * import { main } from "./cli.ts";
 * const code = await main(["--version"], { stdout: (s) => console.log(s) });
 * console.log(code); // 0
 * ```
 */
export async function main(args: string[], io: Io = {}): Promise<number> {
  const out: Out = {
    stdout: io.stdout ?? ((s) => void process.stdout.write(s)),
    stderr: io.stderr ?? ((s) => void process.stderr.write(s)),
    env: io.env ?? process.env,
    signal: io.signal,
    tty: io.tty ?? (io.stdout === undefined && process.stdout.isTTY === true),
  };
  let parsed: Parsed | string;
  try {
    parsed = parse(args, out.env, runtimeVersion());
  } catch (err) {
    if (!(err instanceof UsageError)) {
      out.stderr(`seaport: ${message(err)}\n`); // such as a denied permission
      return 1;
    }
    out.stderr(`seaport: ${err.message}\n${usage(err.command)}\n`);
    return 2;
  }
  if (typeof parsed === "string") {
    out.stdout(parsed + "\n");
    return 0;
  }
  try {
    switch (parsed.command) {
      case "listen":
        return await listen(parsed, out);
      case "service":
        return await service(parsed, out);
      case "completion":
        out.stdout(completion(parsed.target as "bash" | "zsh"));
        return 0;
      case "watch":
        return await watch(parsed, out);
      case "assume":
        return await assume(parsed, out);
      case "get":
        return await get(parsed, out);
      default:
        return await ask(parsed, out);
    }
  } catch (err) {
    out.stderr(`seaport: ${message(err)}\n`);
    return 1;
  }
}

/** Calls `fn` on SIGINT, SIGTERM or abort; returns the remover. */
function onStop(io: Out, fn: (sig: StopSignal) => void): () => void {
  const removers: (() => void)[] = [];
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    const handler = () => fn(sig);
    try {
      process.on(sig, handler);
      removers.push(() => process.off(sig, handler));
    } catch { /* not supported on this platform (SIGTERM on Windows) */ }
  }
  const signal = io.signal;
  if (signal !== undefined) {
    const handler = () => fn("SIGTERM");
    if (signal.aborted) queueMicrotask(handler);
    signal.addEventListener("abort", handler, { once: true });
    removers.push(() => signal.removeEventListener("abort", handler));
  }
  return () => removers.forEach((remove) => remove());
}

/** A promise of the next stop signal, and its remover. */
function untilStopped(io: Out): [Promise<StopSignal>, () => void] {
  let stop: (sig: StopSignal) => void = () => {};
  const stopped = new Promise<StopSignal>((resolve) => stop = resolve);
  return [stopped, onStop(io, (sig) => stop(sig))];
}

/** A file's text, with a message that names the option. */
function readText(path: string, option: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`Cannot read ${option} "${path}": ${message(err)}`);
  }
}

/** The secret: --secret, --secret-file or $SEAPORT_SECRET. */
function secretOf(p: Parsed): { secret?: string } {
  if (p.secretFile !== undefined) {
    const secret = readText(p.secretFile, "--secret-file").replace(
      /\r?\n$/,
      "",
    );
    if (secret === "") {
      throw new Error(`The secret file "${p.secretFile}" is empty`);
    }
    return { secret };
  }
  return p.secret === undefined ? {} : { secret: p.secret };
}

/** The etcd store's options from `--etcd` and its companions. */
function etcdOf(p: Parsed): Pick<ServerOptions, "etcd"> {
  const e = p.etcd;
  if (e === undefined) return {};
  const password = e.passwordFile !== undefined
    ? readText(e.passwordFile, "--etcd-password-file").replace(/\r?\n$/, "")
    : e.password;
  return {
    etcd: {
      endpoints: e.endpoints,
      ...(e.prefix !== undefined ? { prefix: e.prefix } : {}),
      ...(e.username !== undefined ? { username: e.username } : {}),
      ...(password !== undefined ? { password } : {}),
      ...(e.ca !== undefined ? { ca: readText(e.ca, "--etcd-ca") } : {}),
      ...(e.leaseTtl !== undefined ? { leaseTtl: e.leaseTtl } : {}),
      ...(e.address !== undefined ? { address: e.address } : {}),
    },
  };
}

/** `seaport PORT`: serves until stopped. */
async function listen(p: Parsed, io: Out): Promise<number> {
  const tls = p.cert === undefined ? undefined : {
    cert: readText(p.cert, "--cert"),
    key: readText(p.key!, "--key"),
  };
  const server = createServer({
    ...secretOf(p),
    ...etcdOf(p),
    ...(p.range !== undefined ? { range: { "*": p.range } } : {}),
    ...(p.reuseDelay !== undefined ? { reuseDelay: p.reuseDelay } : {}),
    ...(tls !== undefined ? { tls } : {}),
    ...(p.httpPort !== undefined
      ? {
        http: {
          port: p.httpPort,
          ...(p.httpToken !== undefined ? { token: p.httpToken } : {}),
        },
      }
      : {}),
  });
  server.on("error", (err) => io.stderr(`seaport: ${message(err)}\n`));
  const [stopped, remove] = untilStopped(io);
  try {
    const where = p.host === undefined
      ? `*:${p.port}`
      : hostPort({ host: p.host, port: p.port });
    const addr = await server.listen(p.port, p.host).catch((err) => {
      throw new Error(`Cannot listen on ${where}: ${message(err)}`);
    });
    const shown = p.host === undefined
      ? `:${addr.port}`
      : hostPort({ host: addr.hostname, port: addr.port });
    io.stdout(`seaport listening on ${shown}${tls ? " (TLS)" : ""}\n`);
    const http = server.httpAddr;
    if (http !== undefined) {
      const at = p.host === undefined
        ? `:${http.port}`
        : hostPort({ host: http.hostname, port: http.port });
      io.stdout(`seaport HTTP on ${at}${tls ? " (HTTPS)" : ""}\n`);
    }
    await stopped;
    return 0;
  } finally {
    remove();
    await server.close();
  }
}

/** Connects as the options say. */
function open(p: Parsed): Ports {
  const tls = p.ca !== undefined
    ? { tls: { caCerts: [readText(p.ca, "--ca")] } }
    : p.tls
    ? { tls: true as const }
    : {};
  return seaport(p.env).connect(p.address, {
    ...secretOf(p),
    ...tls,
    connectTimeout: Math.min(p.timeout ?? 5000, 5000),
  });
}

/** One wording for a server that cannot be reached. */
function unreachable(address: string, within = ""): string {
  return `cannot reach the seaport server at ${address}${within}`;
}

/** Settles with `work`, or fails when the server was not reached in time. */
async function reach<T>(
  ports: Ports,
  work: Promise<T>,
  p: Parsed,
): Promise<T> {
  let last: unknown;
  const onDisconnect = (err?: unknown) => last = err ?? last;
  ports.on("disconnect", onDisconnect);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(
        new Error(
          unreachable(p.address, ` within ${p.timeout} ms`) + why(last),
        ),
      );
    }, p.timeout);
  });
  work.catch(() => {}); // rejects with CLOSED after a timeout
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
    ports.off("disconnect", onDisconnect);
  }
}

/**
 * Says on stderr when the connection is lost and when it is back; while the
 * first connection is not made, says so every few seconds.
 */
function narrate(
  ports: Ports,
  p: Parsed,
  log: (line: string) => void,
): () => void {
  let down = false;
  let ever = ports.connected;
  let last: unknown;
  const started = Date.now();
  const nag = setInterval(() => {
    if (ever) return;
    const s = Math.round((Date.now() - started) / 1000);
    log(
      `seaport: ${unreachable(p.address)}${
        why(last)
      }; still trying after ${s} s`,
    );
  }, NAG_EVERY);
  const onDisconnect = (err?: unknown) => {
    last = err ?? last;
    if (!down && ever) {
      log(`seaport: ${unreachable(p.address)}${why(err)}; retrying`);
    }
    down = true;
  };
  const onConnect = () => {
    if (down && ever) log(`seaport: connected to ${p.address} again`);
    down = false;
    ever = true;
  };
  ports.on("disconnect", onDisconnect);
  ports.on("connect", onConnect);
  return () => {
    clearInterval(nag);
    ports.off("disconnect", onDisconnect);
    ports.off("connect", onConnect);
  };
}

/**
 * Waits for `work` (the first registration of `service` or `assume`), for at
 * most `--timeout` when given; rejects on a fatal error or a stop.
 */
async function startup<T>(
  ports: Ports,
  work: Promise<T>,
  p: Parsed,
  stopped: Promise<StopSignal>,
): Promise<T | StopSignal> {
  const race = p.timeout === undefined ? work : reach(ports, work, p);
  return await Promise.race([race, stopped]);
}

/** `show`, `query` and `free`: one answer. */
async function ask(p: Parsed, io: Out): Promise<number> {
  const ports = open(p);
  try {
    if (p.command === "show") {
      const scope = p.envGiven ? { env: p.env } : { all: true };
      const records = await reach(
        ports,
        ports.query({
          ...scope,
          since: true,
          ...(p.role !== undefined ? { pattern: p.role } : {}),
        }),
        p,
      );
      const sorted = records.sort(byRole);
      io.stdout(
        p.json || !io.tty
          ? JSON.stringify(sorted, null, 2) + "\n"
          : table(sorted, Date.now()),
      );
      return 0;
    }
    if (p.command === "query") {
      const records = await reach(
        ports,
        ports.query({ pattern: p.role!, ...(p.allEnvs ? { all: true } : {}) }),
        p,
      );
      io.stdout(printed(records, p));
      return 0;
    }
    // free
    const target = parseService(p.target);
    const connected = new Promise<void>((resolve) => {
      if (ports.connected) resolve();
      else ports.on("connect", () => resolve());
    });
    await reach(ports, connected, p);
    const host = target.host ?? ports.host!;
    const record = await reach(ports, ports.evict(host, target.port), p);
    io.stdout(
      `freed ${record.role}@${record.version} at ${hostPort(record)}${
        record.env === "" ? "" : ` in "${record.env}"`
      }\n`,
    );
    return 0;
  } finally {
    await ports.close();
  }
}

/** What `query` and `get` print: `host:port` strings, or the records. */
function printed(records: readonly ServiceRecord[], p: Parsed): string {
  return p.records
    ? JSON.stringify(records, null, 2) + "\n"
    : JSON.stringify(records.map(hostPort)) + "\n";
}

/** `get`: waits for the first match. */
async function get(p: Parsed, io: Out): Promise<number> {
  const ports = open(p);
  const quiet = narrate(ports, p, (line) => io.stderr(line + "\n"));
  const [stopped, remove] = untilStopped(io);
  try {
    const found = ports.get(
      p.role!,
      p.timeout === undefined ? {} : { timeout: p.timeout },
    );
    found.catch(() => {});
    const first = await Promise.race([found, stopped]);
    if (typeof first === "string") return 1;
    io.stdout(printed(first, p));
    return 0;
  } catch (err) {
    if (err instanceof TimeoutError) {
      const where = ports.connected ? "" : ` (${unreachable(p.address)})`;
      throw new Error(
        `no service matched "${p.role}" within ${p.timeout} ms${where}`,
      );
    }
    throw err;
  } finally {
    remove();
    quiet();
    await ports.close();
  }
}

/**
 * Resolves when the registration on `port` is taken away (another service's
 * assume of the port, an operator's free): the server said so.
 */
function lostPort(
  ports: Ports,
  port: number,
): Promise<{ lost: LostReason }> {
  return new Promise((resolve) =>
    ports.on("lost", (r, reason) => {
      if (r.port === port) resolve({ lost: reason });
    })
  );
}

function lostMessage(role: string, port: number, reason: LostReason) {
  return `seaport: ${role} lost port ${port}: ${
    reason === "assume" ? "another service assumed it" : "an operator freed it"
  }`;
}

/** `assume`: registers a running service until stopped. */
async function assume(p: Parsed, io: Out): Promise<number> {
  const log = (line: string) => io.stderr(line + "\n");
  const ports = open(p);
  const quiet = narrate(ports, p, log);
  const [stopped, remove] = untilStopped(io);
  const fatal = fatalErrors(ports, log);
  try {
    const registered = ports.assume(p.role!, { ...p.meta, port: p.port });
    const first = await startup(
      ports,
      Promise.race([registered, fatal]),
      p,
      stopped,
    );
    if (typeof first === "string") return 0;
    log(
      `seaport: ${p.role} is registered at ${
        hostPort(first)
      } until this command stops`,
    );
    // a fatal error rejects
    const end = await Promise.race([stopped, fatal, lostPort(ports, p.port!)]);
    if (typeof end === "string") return 0;
    log(lostMessage(p.role!, p.port!, end.lost));
    return 1;
  } finally {
    remove();
    quiet();
    await ports.close();
  }
}

/**
 * Errors that end `service` and `assume` (a wrong secret, a refused
 * registration), as a promise that rejects; others are logged.
 */
function fatalErrors(
  ports: Ports,
  log: (line: string) => void,
): Promise<never> {
  let fail: (err: Error) => void = () => {};
  const failed = new Promise<never>((_, reject) => fail = reject);
  failed.catch(() => {});
  ports.on("error", (err) => {
    if (err instanceof AuthError || err instanceof RegistryError) fail(err);
    else if (!(err instanceof ConnectionError && err.code === "CLOSED")) {
      log(`seaport: ${message(err)}`);
    }
  });
  return failed;
}

/** `service`: registers, supervises the command, frees when it has exited. */
async function service(p: Parsed, io: Out): Promise<number> {
  const log = (line: string) => io.stderr(line + "\n");
  const ports = open(p);
  const quiet = narrate(ports, p, log);
  const fatal = fatalErrors(ports, log);
  let supervision: Supervision | undefined;
  let stopWith: (sig: StopSignal) => void = () => {};
  const stopped = new Promise<StopSignal>((resolve) => stopWith = resolve);
  let signals = 0;
  const remove = onStop(io, (sig) => {
    if (signals++ === 0) {
      if (supervision !== undefined) {
        log(`seaport: stopping ${p.role} (${sig} again kills it now)`);
      }
    } else void supervision?.stop(sig); // again: kill the command
    stopWith(sig);
  });
  const allocated = new Promise<number>((resolve, reject) => {
    ports.service(p.role!, p.meta, (port, _ready) => resolve(port))
      .catch(reject);
  });
  try {
    const first = await startup(
      ports,
      Promise.race([allocated, fatal]),
      p,
      stopped,
    );
    if (typeof first === "string") return 0;
    const port = first;
    const [command = "", ...args] = p.exec;
    log(`seaport: ${p.role} has port ${port}; running ${command}`);
    supervision = supervise({
      command,
      args,
      port,
      env: io.env,
      log,
      restart: p.restart,
      ...(p.maxRestarts !== undefined ? { maxRestarts: p.maxRestarts } : {}),
      restartWindow: p.restartWindow,
      check: p.check,
      grace: p.grace,
      onUp: () =>
        void ports.ready(port).then(
          () => log(`seaport: ${p.role} is up on ${port}`),
          (err) => log(`seaport: ${message(err)}`),
        ),
      onDown: (reason) => {
        log(`seaport: ${p.role} is not ready: ${reason}`);
        void ports.unready(port).catch((err) =>
          log(`seaport: ${message(err)}`)
        );
      },
    });
    // Its registration taken away: the command stops, and `service` ends
    // with 1, for whatever runs it to start it again on a new port.
    const end = await Promise.race([
      stopped,
      fatal,
      supervision.done,
      lostPort(ports, port),
    ]);
    if (typeof end === "string") {
      await supervision.stop(end); // freed once the command has exited
      return 0;
    }
    if ("lost" in end) {
      log(`${lostMessage(p.role!, port, end.lost)}; stopping ${command}`);
      await supervision.stop("SIGTERM");
      return 1;
    }
    if (end.error !== undefined) throw end.error;
    return end.code;
  } catch (err) {
    await supervision?.stop("SIGTERM");
    throw err;
  } finally {
    remove();
    quiet();
    await ports.close();
  }
}

/** `watch`: prints events with timestamps; resynchronises after reconnects. */
async function watch(p: Parsed, io: Out): Promise<number> {
  const ports = open(p);
  const scope = p.allEnvs ? { all: true } : { env: p.env };
  const json = p.json || !io.tty;
  const print = (
    type: string,
    record: ServiceRecord | undefined,
    extra: Record<string, unknown> = {},
  ) => {
    const time = new Date().toISOString();
    if (json) {
      io.stdout(JSON.stringify({ time, type, ...extra, record }) + "\n");
      return;
    }
    if (record === undefined) {
      io.stdout(`${time} ${type} ${extra.changes} change(s) while away\n`);
      return;
    }
    const notes = [
      record.env === "" ? "" : `env=${record.env}`,
      extra.unready ? "(not ready; port kept)" : "",
      extra.resync ? "(while away)" : "",
    ].filter(Boolean).join(" ");
    io.stdout(
      `${time} ${type.padEnd(8)} ${record.role}@${record.version} ${
        hostPort(record)
      }${notes === "" ? "" : " " + notes}\n`,
    );
  };
  // What is visible now, by what a reader tells apart: a registration that
  // came back on the same address under a new id has not changed.
  const known = new Map<string, ServiceRecord>();
  const keyOf = (r: ServiceRecord) =>
    `${r.env}\u0000${r.role}@${r.version}\u0000${hostPort(r)}`;
  let first: (records: ServiceRecord[]) => void = () => {};
  const synced = new Promise<ServiceRecord[]>((resolve) => first = resolve);
  let started = false;
  ports.on("resync", (records) => {
    if (!started) {
      started = true;
      for (const r of records) known.set(keyOf(r), r);
      first(records);
      return;
    }
    const now = new Map(records.map((r) => [keyOf(r), r]));
    const gone = [...known].filter(([k]) => !now.has(k));
    const came = [...now].filter(([k]) => !known.has(k));
    print("resync", undefined, { changes: gone.length + came.length });
    for (const [k, r] of gone) {
      known.delete(k);
      print("free", r, { resync: true });
    }
    for (const [k, r] of came) {
      known.set(k, r);
      print("allocate", r, { resync: true });
    }
  }, scope);
  for (const type of ["allocate", "assume", "free"] as const) {
    ports.on(type, (record: ServiceRecord, unready: boolean) => {
      if (type === "free") known.delete(keyOf(record));
      else known.set(keyOf(record), record);
      print(type, record, unready ? { unready: true } : {});
    }, scope);
  }
  let remove = () => {};
  let quiet = () => {};
  try {
    await reach(ports, synced, p);
    const what = p.allEnvs
      ? "every environment"
      : p.env === ""
      ? "the default environment"
      : `environment "${p.env}"`;
    io.stderr(`seaport: watching ${p.address} (${what})\n`);
    quiet = narrate(ports, p, (line) => io.stderr(line + "\n"));
    const ended = new Promise<number>((resolve) => {
      remove = onStop(io, () => resolve(0));
      ports.on("error", (err) => {
        io.stderr(`seaport: ${message(err)}\n`);
        if (err instanceof AuthError) resolve(1);
      });
    });
    return await ended;
  } finally {
    remove();
    quiet();
    await ports.close();
  }
}

/** Sorts by role, then newest version first, then address. */
function byRole(a: ServiceRecord, b: ServiceRecord): number {
  return a.role.localeCompare(b.role) ||
    semver.rcompare(a.version, b.version) ||
    a.env.localeCompare(b.env) ||
    a.host.localeCompare(b.host) || a.port - b.port;
}

/** The port map as an aligned table. */
function table(records: readonly ServiceRecord[], now: number): string {
  if (records.length === 0) return "no services registered\n";
  const rows = records.map((r) => {
    const meta = Object.entries(r).filter(([k]) =>
      !["host", "port", "role", "version", "env", "id", "since"].includes(k)
    ).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
    const since = typeof r.since === "number" ? r.since : undefined;
    return [
      r.role,
      r.version,
      hostPort(r),
      r.env === "" ? "-" : r.env,
      since === undefined ? "?" : duration(now - since),
      meta.join(" "),
    ];
  });
  const head = ["ROLE", "VERSION", "ADDRESS", "ENV", "UP", "METADATA"];
  const all = [head, ...rows];
  const widths = head.map((_, i) =>
    Math.max(...all.map((row) => row[i]!.length))
  );
  return all.map((row) =>
    row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i]!))
      .join("  ").trimEnd()
  ).join("\n") + "\n";
}

/** `45s`, `12m3s`, `5h2m`, `3d4h`. */
function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor(s % 3600 / 60)}m`;
  return `${Math.floor(s / 86400)}d${Math.floor(s % 86400 / 3600)}h`;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** ` (reason)`, or nothing without one. */
function why(err: unknown): string {
  return err === undefined ? "" : ` (${message(err)})`;
}

if (import.meta.main) {
  const deno = (globalThis as { Deno?: { args: string[] } }).Deno;
  process.exit(await main(deno?.args ?? process.argv.slice(2)));
}
