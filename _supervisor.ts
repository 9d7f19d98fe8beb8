/**
 * The process supervisor behind `seaport service`: runs a command with its
 * port as the last argument and in `$PORT`, says when the command is up (it
 * accepts TCP connections on the port) and when it is down (it exited, or
 * failed its health check so many times in a row), restarts it on the same
 * port by a restart policy (with exponential backoff, reset after it stayed up
 * a while), and stops it on request. Private to the CLI.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, existsSync } from "node:fs";
import { request } from "node:http";
import { connect } from "node:net";
import { delimiter, isAbsolute, join } from "node:path";
import process from "node:process";
import { setTimeout as sleep } from "node:timers/promises";

/** The first restart delay, in ms; doubled after every quick exit. */
export const RESTART_DELAY_MIN = 100;
/** The cap of the restart delay, in ms. */
export const RESTART_DELAY_MAX = 10_000;
/** A run at least this long (ms) resets the restart delay. */
export const STABLE_AFTER = 10_000;
const PROBE_DELAY_MIN = 20;
const PROBE_DELAY_MAX = 500;
const PROBE_TIMEOUT = 1000;
const SLOW_START = 10_000;

/** When a command that exited is started again. */
export type RestartPolicy = "always" | "on-failure" | "never";

/** How the supervisor checks a running command. */
export interface HealthCheck {
  /** Milliseconds between checks. */
  interval: number;
  /** Milliseconds one check may take. */
  timeout: number;
  /** Failures in a row that make the command down. */
  failures: number;
  /** Check with `GET http://127.0.0.1:PORT` + `http` (2xx is healthy). */
  http?: string | undefined;
  /** Check by running this shell command (exit 0 is healthy). */
  cmd?: string | undefined;
}

/** What {@linkcode supervise} runs and whom it tells. */
export interface SuperviseOptions {
  /** The program to run. */
  command: string;
  /** Its arguments; the port is appended as the last one. */
  args: readonly string[];
  /** The port the command must listen on. */
  port: number;
  /** The command's environment; `PORT` is added. */
  env: Readonly<Record<string, string | undefined>>;
  /** The command accepts connections (first, after a restart, or healthy again). */
  onUp: () => void;
  /** The command went down: it exited, or failed its health check. */
  onDown: (why: string) => void;
  /** Writes one line of status for people. */
  log: (line: string) => void;
  /** When to restart. Default: `always`. */
  restart?: RestartPolicy;
  /** Restarts allowed within `restartWindow` before giving up. Default: unbounded. */
  maxRestarts?: number;
  /** The window of `maxRestarts`, in ms. Default: 60000. */
  restartWindow?: number;
  /** How the running command is checked. Default: a TCP connect every 2 s. */
  check?: HealthCheck;
  /** Milliseconds a stopped command has to exit before it is killed. Default: 10000. */
  grace?: number;
}

/** How a supervision ended. */
export interface Outcome {
  /** Set when it ended in failure: the command cannot run, or restarted too often. */
  error?: Error;
  /** The exit code `seaport service` should end with. */
  code: number;
}

/** A running supervision. */
export interface Supervision {
  /**
   * Resolves when supervision ended: after {@linkcode Supervision.stop}, when
   * the restart policy says not to restart, or in failure.
   */
  readonly done: Promise<Outcome>;
  /**
   * Stops restarting, sends `signal` to the command and waits until it exits
   * (killing it after the grace period, or at once when called again).
   */
  stop(signal: "SIGINT" | "SIGTERM"): Promise<void>;
}

/** The default health check: a TCP connect every 2 s, down after 2 failures. */
export const DEFAULT_CHECK: HealthCheck = {
  interval: 2000,
  timeout: 1000,
  failures: 2,
};

/**
 * Runs `command args… PORT` and keeps it running until stopped.
 *
 * On Linux the command is started through `setpriv --pdeathsig SIGTERM`, so
 * that it is told to stop when the supervisor dies (even by `kill -9`).
 *
 * @param options The command, its port and environment, and callbacks.
 * @returns The supervision, already running.
 */
export function supervise(options: SuperviseOptions): Supervision {
  const { command, args, port, log } = options;
  const env: Record<string, string | undefined> = {
    ...options.env,
    PORT: String(port),
  };
  const policy = options.restart ?? "always";
  const maxRestarts = options.maxRestarts ?? Infinity;
  const window = options.restartWindow ?? 60_000;
  const check = options.check ?? DEFAULT_CHECK;
  const grace = options.grace ?? 10_000;
  const stopping = new AbortController();
  let child: ChildProcess | undefined;
  let up = false;
  const restarts: number[] = [];

  const setUp = (now: boolean, why = "") => {
    if (now === up) return;
    up = now;
    if (now) options.onUp();
    else options.onDown(why);
  };

  const run = async (): Promise<Outcome> => {
    const program = findProgram(command, env.PATH);
    if (program === undefined) {
      return {
        code: 1,
        error: new Error(`Cannot run "${command}": no such program`),
      };
    }
    let delay = RESTART_DELAY_MIN;
    while (!stopping.signal.aborted) {
      const started = Date.now();
      const proc = start(program, [...args, String(port)], env);
      child = proc;
      const exited = new AbortController();
      const exit = new Promise<string | Error>((resolve) => {
        proc.once("exit", (code, sig) => {
          exited.abort();
          setUp(false, `it exited with ${describe(code, sig)}`);
          resolve(sig === null ? `code ${code}` : `signal ${sig}`);
        });
        proc.on("error", (err) => {
          if (proc.pid === undefined) resolve(err); // never started
          else log(`seaport: ${err.message}`);
        });
      });
      void watch(port, check, env, exited.signal, log, setUp);
      const how = await exit;
      child = undefined;
      if (how instanceof Error) {
        return {
          code: 1,
          error: new Error(`Cannot run "${command}": ${how.message}`, {
            cause: how,
          }),
        };
      }
      if (stopping.signal.aborted) break;
      const code = proc.exitCode ?? 1;
      if (policy === "never" || (policy === "on-failure" && code === 0)) {
        log(
          `seaport: "${command}" exited with ${how}; not restarting (--restart ${policy})`,
        );
        return { code: proc.exitCode ?? 1 };
      }
      const now = Date.now();
      restarts.push(now);
      while (restarts.length > 0 && restarts[0]! <= now - window) {
        restarts.shift();
      }
      if (restarts.length > maxRestarts) {
        return {
          code: 1,
          error: new Error(
            `"${command}" exited ${restarts.length} times within ${window} ms (--max-restarts ${maxRestarts}); giving up`,
          ),
        };
      }
      if (now - started >= STABLE_AFTER) delay = RESTART_DELAY_MIN;
      log(
        `seaport: "${command}" exited with ${how}; restarting in ${delay} ms`,
      );
      await sleep(delay, undefined, { signal: stopping.signal }).catch(
        () => {},
      );
      delay = Math.min(delay * 2, RESTART_DELAY_MAX);
    }
    return { code: 0 };
  };

  const done = run();
  let stopped: Promise<void> | undefined;
  return {
    done,
    stop(sig) {
      const proc = child;
      if (stopped !== undefined) {
        signal(proc, "SIGKILL");
        return stopped;
      }
      stopping.abort();
      setUp(false, "it is stopping");
      if (proc === undefined) return stopped = done.then(() => {});
      const killer = setTimeout(() => {
        log(
          `seaport: "${command}" did not exit within ${grace} ms; killing it`,
        );
        signal(proc, "SIGKILL");
      }, grace);
      signal(proc, sig);
      return stopped = done.then(() => clearTimeout(killer));
    },
  };
}

/** `code 3` or `signal SIGKILL`, for people. */
function describe(code: number | null, sig: string | null): string {
  return sig === null ? `code ${code}` : `signal ${sig}`;
}

const SETPRIV = "/usr/bin/setpriv";
const pdeathsig = process.platform === "linux" && existsSync(SETPRIV);

/** Starts the command; on Linux it gets SIGTERM when its parent dies. */
function start(
  program: string,
  args: string[],
  env: Record<string, string | undefined>,
): ChildProcess {
  return pdeathsig
    ? spawn(SETPRIV, ["--pdeathsig", "SIGTERM", "--", program, ...args], {
      stdio: "inherit",
      env,
    })
    : spawn(program, args, { stdio: "inherit", env });
}

/** The program's path: as given when it has a slash, else found on `PATH`. */
function findProgram(
  command: string,
  path: string | undefined,
): string | undefined {
  const runnable = (file: string) => {
    try {
      accessSync(file, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (command.includes("/") || command.includes("\\")) {
    return runnable(command) ? command : undefined;
  }
  if (process.platform === "win32") return command; // PATHEXT: leave it to spawn
  // without PATH, where execvp(3) looks
  for (const dir of (path ?? "/usr/local/bin:/usr/bin:/bin").split(delimiter)) {
    if (dir === "" || !isAbsolute(dir)) continue;
    const file = join(dir, command);
    if (runnable(file)) return file;
  }
  return undefined;
}

/**
 * Sends a signal to a running child. (`child.kill()` on Deno ignores a second
 * signal and reports the exit as caused by the first.)
 */
function signal(child: ChildProcess | undefined, sig: NodeJS.Signals): void {
  if (child?.pid === undefined || child.exitCode !== null) return;
  if (child.signalCode !== null) return;
  try {
    process.kill(child.pid, sig);
  } catch { /* exited meanwhile */ }
}

/**
 * Follows one run of the command until `exited`: first waits until it accepts
 * connections (then up), then checks it every interval; `failures` failed
 * checks in a row make it down, one passed check up again.
 */
async function watch(
  port: number,
  check: HealthCheck,
  env: Readonly<Record<string, string | undefined>>,
  exited: AbortSignal,
  log: (line: string) => void,
  setUp: (up: boolean, why?: string) => void,
): Promise<void> {
  if (!await firstAccept(port, exited, log)) return;
  setUp(true);
  let failed = 0;
  let healthy = true;
  while (!exited.aborted) {
    try {
      await sleep(check.interval, undefined, { signal: exited });
    } catch {
      return;
    }
    const problem = await healthCheck(port, check, env);
    if (exited.aborted) return;
    if (problem === undefined) {
      failed = 0;
      if (!healthy) {
        healthy = true;
        log(`seaport: the health check passes again`);
        setUp(true);
      }
      continue;
    }
    failed++;
    if (healthy && failed >= check.failures) {
      healthy = false;
      const why =
        `failed its health check ${failed} times in a row (${problem})`;
      log(`seaport: the command ${why}`);
      setUp(false, why);
    }
  }
}

/**
 * Tries to connect to `port` on loopback with a capped backoff until it
 * succeeds (true) or the command exits (false); says so once if that takes
 * long.
 */
async function firstAccept(
  port: number,
  exited: AbortSignal,
  log: (line: string) => void,
): Promise<boolean> {
  let warned = false;
  let delay = PROBE_DELAY_MIN;
  const started = Date.now();
  while (!exited.aborted) {
    if (await accepts(port, PROBE_TIMEOUT) === undefined) {
      return !exited.aborted;
    }
    try {
      await sleep(delay, undefined, { signal: exited });
    } catch {
      return false;
    }
    delay = Math.min(delay * 2, PROBE_DELAY_MAX);
    if (!warned && Date.now() - started >= SLOW_START) {
      warned = true;
      log(`seaport: nothing accepts connections on port ${port} yet`);
    }
  }
  return false;
}

/** Runs one health check; `undefined` when healthy, else what failed. */
function healthCheck(
  port: number,
  check: HealthCheck,
  env: Readonly<Record<string, string | undefined>>,
): Promise<string | undefined> {
  if (check.cmd !== undefined) return commandCheck(check.cmd, check, env);
  if (check.http !== undefined) return httpCheck(port, check);
  return accepts(port, check.timeout);
}

/** Whether loopback `port` accepts a TCP connection (IPv4, then IPv6). */
async function accepts(
  port: number,
  timeout: number,
): Promise<string | undefined> {
  const v4 = await connects("127.0.0.1", port, timeout);
  if (v4 === undefined) return undefined;
  const v6 = await connects("::1", port, timeout);
  return v6 === undefined ? undefined : v4;
}

function connects(
  host: string,
  port: number,
  timeout: number,
): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const finish = (problem: string | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(problem);
    };
    const timer = setTimeout(
      () => finish(`no connection within ${timeout} ms`),
      timeout,
    );
    socket.once("connect", () => finish(undefined));
    socket.once("error", (err) => finish(`connect: ${err.message}`));
  });
}

/** `GET` of the check's path on loopback; a 2xx answer is healthy. */
function httpCheck(
  port: number,
  check: HealthCheck,
): Promise<string | undefined> {
  const path = check.http!.startsWith("/") ? check.http! : `/${check.http}`;
  return new Promise((resolve) => {
    const req = request({
      host: "127.0.0.1",
      port,
      path,
      agent: false,
      timeout: check.timeout,
    }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      resolve(
        status >= 200 && status < 300
          ? undefined
          : `GET ${path}: HTTP ${status}`,
      );
      req.destroy();
    });
    req.once("timeout", () => {
      resolve(`GET ${path}: no answer within ${check.timeout} ms`);
      req.destroy();
    });
    req.once("error", (err) => resolve(`GET ${path}: ${err.message}`));
    req.end();
  });
}

/** Runs the check's shell command (with `$PORT`); exit 0 is healthy. */
function commandCheck(
  cmd: string,
  check: HealthCheck,
  env: Readonly<Record<string, string | undefined>>,
): Promise<string | undefined> {
  return new Promise((resolve) => {
    const shell = process.platform === "win32" ? "cmd.exe" : "/bin/sh";
    const flag = process.platform === "win32" ? "/c" : "-c";
    const proc = spawn(shell, [flag, cmd], {
      stdio: "ignore",
      env,
    });
    const timer = setTimeout(() => {
      signal(proc, "SIGKILL");
      resolve(`"${cmd}" took longer than ${check.timeout} ms`);
    }, check.timeout);
    proc.once("error", (err) => {
      clearTimeout(timer);
      resolve(`"${cmd}": ${err.message}`);
    });
    proc.once("exit", (code, sig) => {
      clearTimeout(timer);
      resolve(
        code === 0 ? undefined : `"${cmd}" exited with ${describe(code, sig)}`,
      );
    });
  });
}
