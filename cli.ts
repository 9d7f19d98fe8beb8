/**
 * The `seaport` command line: serve a registry, show and query it, watch its
 * events, and run a command as a registered service.
 *
 * ```sh
 * seaport 9090
 * seaport localhost:9090 service web@1.2.3 -- node server.js
 * seaport localhost:9090 query web@1.2.x
 * ```
 *
 * Run it with `deno run -A jsr:@seaport/seaport/cli`, `npx seaport`, or the
 * single binary from `deno task compile`. See the README for every command.
 *
 * @module
 */
import process from "node:process";
import {
  AuthError,
  ConnectionError,
  createServer,
  type Ports,
  RegistryError,
  seaport,
  type ServiceRecord,
} from "./mod.ts";
import { supervise, type Supervision } from "./_supervisor.ts";
import { parse, type Parsed, usage, UsageError } from "./_args.ts";

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
}

type Out = Required<Omit<Io, "signal">> & { signal: AbortSignal | undefined };
type StopSignal = "SIGINT" | "SIGTERM";

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
  };
  let parsed: Parsed | string;
  try {
    parsed = parse(args, out.env);
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
      default:
        return await talk(parsed, out);
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

/** `seaport PORT`: serves until stopped. */
async function listen(p: Parsed, io: Out): Promise<number> {
  const server = createServer({
    ...(p.secret !== undefined ? { secret: p.secret } : {}),
    ...(p.range !== undefined ? { range: { "*": p.range } } : {}),
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
  let stop = () => {};
  const stopped = new Promise<void>((resolve) => stop = resolve);
  const remove = onStop(io, () => stop());
  try {
    const where = `${p.host ?? "*"}:${p.port}`;
    const addr = await server.listen(p.port, p.host).catch((err) => {
      throw new Error(`Cannot listen on ${where}: ${message(err)}`);
    });
    io.stdout(`seaport listening on :${addr.port}\n`);
    if (server.httpAddr !== undefined) {
      io.stdout(`seaport HTTP on :${server.httpAddr.port}\n`);
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
  return seaport(p.env).connect(p.address, {
    ...(p.secret !== undefined ? { secret: p.secret } : {}),
    connectTimeout: Math.min(p.timeout, 5000),
  });
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
          `Cannot reach the seaport server at ${p.address} within ${p.timeout} ms${
            why(last)
          }`,
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

/** `show`, `query` and `watch`. */
async function talk(p: Parsed, io: Out): Promise<number> {
  const ports = open(p);
  let remove = () => {};
  try {
    if (p.command === "show") {
      const all = ports.query(p.allEnvs ? { all: true } : {});
      const records = await reach(ports, all, p);
      io.stdout(JSON.stringify(records, null, 2) + "\n");
      return 0;
    }
    if (p.command === "query") {
      const records = await reach(ports, ports.query(p.role), p);
      io.stdout(JSON.stringify(records.map(hostPort)) + "\n");
      return 0;
    }
    for (const type of ["allocate", "assume", "free"] as const) {
      ports.on(type, (record) => {
        io.stdout(JSON.stringify({ type, record }) + "\n");
      });
    }
    // Answered after the subscription, which is sent first on connecting.
    await reach(ports, ports.query(), p);
    io.stderr(`seaport: watching ${p.address}\n`);
    const ended = new Promise<number>((resolve) => {
      remove = onStop(io, () => resolve(0));
      ports.on("error", (err) => {
        io.stderr(`seaport: ${message(err)}\n`);
        if (err instanceof AuthError) resolve(1);
      });
    });
    let down = false;
    ports.on("disconnect", (err) => {
      if (!down) io.stderr(`seaport: lost ${p.address}${why(err)}; retrying\n`);
      down = true;
    });
    ports.on("connect", () => {
      down = false;
      io.stderr(`seaport: watching ${p.address}\n`);
    });
    return await ended;
  } finally {
    remove();
    await ports.close();
  }
}

/** `service`: registers, supervises the command, frees on stop. */
async function service(p: Parsed, io: Out): Promise<number> {
  const log = (line: string) => io.stderr(line + "\n");
  const ports = open(p);
  let fatal: (err: Error) => void = () => {};
  const failed = new Promise<Error>((resolve) => fatal = resolve);
  let stopWith: (sig: StopSignal) => void = () => {};
  const stopped = new Promise<StopSignal>((resolve) => stopWith = resolve);
  let supervision: Supervision | undefined;
  let signals = 0;
  const remove = onStop(io, (sig) => {
    if (signals++ > 0) void supervision?.stop(sig); // again: kill the command
    stopWith(sig);
  });
  let down = false;
  ports.on("error", (err) => {
    if (err instanceof AuthError || err instanceof RegistryError) fatal(err);
    else if (!(err instanceof ConnectionError && err.code === "CLOSED")) {
      log(`seaport: ${message(err)}`);
    }
  });
  ports.on("disconnect", (err) => {
    if (!down) log(`seaport: cannot reach ${p.address}${why(err)}; retrying`);
    down = true;
  });
  ports.on("connect", () => {
    if (down) log(`seaport: connected to ${p.address}`);
    down = false;
  });
  const allocated = new Promise<[number, () => Promise<void>]>((resolve) => {
    ports.service(p.role, p.meta, (port, ready) => resolve([port, ready]))
      .catch(fatal);
  });
  try {
    const first = await Promise.race([allocated, failed, stopped]);
    if (typeof first === "string") return 0;
    if (first instanceof Error) throw first;
    const [port, ready] = first;
    const [command = "", ...args] = p.exec;
    log(`seaport: ${p.role} has port ${port}; running ${command}`);
    supervision = supervise({
      command,
      args,
      port,
      env: io.env,
      log,
      onListening: () =>
        void ready().then(() => log(`seaport: ${p.role} is up on ${port}`)),
    });
    const end = await Promise.race([stopped, failed, supervision.done]);
    if (end instanceof Error) {
      await supervision.stop("SIGTERM");
      throw end;
    }
    await Promise.all([supervision.stop(end ?? "SIGTERM"), ports.close()]);
    return 0;
  } finally {
    remove();
    await ports.close();
  }
}

function hostPort(r: ServiceRecord): string {
  return r.host.includes(":") ? `[${r.host}]:${r.port}` : `${r.host}:${r.port}`;
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
