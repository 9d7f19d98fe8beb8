/**
 * The process supervisor behind `seaport service`: runs a command with its
 * port as the last argument and in `$PORT`, reports once the command accepts
 * TCP connections on that port, restarts it on the same port when it exits
 * (with exponential backoff, reset after it stayed up a while), and stops it
 * on request. Private to the CLI.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { connect } from "node:net";
import process from "node:process";

/** The first restart delay, in ms; doubled after every quick exit. */
export const RESTART_DELAY_MIN = 100;
/** The cap of the restart delay, in ms. */
export const RESTART_DELAY_MAX = 10_000;
/** A run at least this long (ms) resets the restart delay. */
export const STABLE_AFTER = 10_000;
/** How long (ms) a stopped command has to exit before it is killed. */
export const STOP_GRACE = 10_000;
const PROBE_DELAY_MIN = 20;
const PROBE_DELAY_MAX = 500;
const PROBE_TIMEOUT = 1000;
const SLOW_START = 10_000;

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
  /** Called once, when the command first accepts a TCP connection. */
  onListening: () => void;
  /** Writes one line of status for people. */
  log: (line: string) => void;
}

/** A running supervision. */
export interface Supervision {
  /**
   * Resolves when supervision ended: after {@linkcode Supervision.stop}, or
   * with an error when the command cannot be started at all.
   */
  readonly done: Promise<Error | undefined>;
  /**
   * Stops restarting, sends `signal` to the command and waits until it exits
   * (killing it after a grace period, or at once when called again).
   */
  stop(signal: "SIGINT" | "SIGTERM"): Promise<void>;
}

/**
 * Runs `command args… PORT` and keeps it running until stopped.
 *
 * @param options The command, its port and environment, and callbacks.
 * @returns The supervision, already running.
 */
export function supervise(options: SuperviseOptions): Supervision {
  const { command, args, port, log } = options;
  const env = { ...options.env, PORT: String(port) };
  let stopping = false;
  let child: ChildProcess | undefined;
  let wake: (() => void) | undefined;
  let listening = false;

  const run = async (): Promise<Error | undefined> => {
    let delay = RESTART_DELAY_MIN;
    while (!stopping) {
      const started = Date.now();
      const proc = spawn(command, [...args, String(port)], {
        stdio: "inherit",
        env,
      });
      child = proc;
      const exit = new Promise<string | Error>((resolve) => {
        proc.once(
          "exit",
          (code, sig) =>
            resolve(sig === null ? `code ${code}` : `signal ${sig}`),
        );
        proc.on("error", (err) => {
          if (proc.pid === undefined) resolve(err); // never started
          else log(`seaport: ${err.message}`);
        });
      });
      if (!listening) probe(port, exit, log).then(reached);
      const how = await exit;
      child = undefined;
      if (how instanceof Error) {
        return new Error(`Cannot run "${command}": ${how.message}`, {
          cause: how,
        });
      }
      if (stopping) break;
      if (Date.now() - started >= STABLE_AFTER) delay = RESTART_DELAY_MIN;
      log(
        `seaport: "${command}" exited with ${how}; restarting in ${delay} ms`,
      );
      await pause(delay, (w) => wake = w);
      delay = Math.min(delay * 2, RESTART_DELAY_MAX);
    }
    return undefined;
  };

  const reached = (ok: boolean) => {
    if (!ok || listening || stopping) return;
    listening = true;
    options.onListening();
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
      stopping = true;
      wake?.();
      if (proc === undefined) return stopped = done.then(() => {});
      const killer = setTimeout(() => {
        log(`seaport: "${command}" did not exit; killing it`);
        signal(proc, "SIGKILL");
      }, STOP_GRACE);
      signal(proc, sig);
      return stopped = done.then(() => clearTimeout(killer));
    },
  };
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
 * Tries to connect to `port` on loopback (IPv4, then IPv6) with a capped
 * backoff until it succeeds or `exit` settles; says so once if that takes long.
 */
async function probe(
  port: number,
  exit: Promise<unknown>,
  log: (line: string) => void,
): Promise<boolean> {
  let exited = false;
  let warned = false;
  let wake: (() => void) | undefined;
  exit.then(() => {
    exited = true;
    wake?.();
  });
  let delay = PROBE_DELAY_MIN;
  const started = Date.now();
  while (!exited) {
    if (await accepts("127.0.0.1", port) || await accepts("::1", port)) {
      return !exited;
    }
    if (exited) break;
    await pause(delay, (w) => wake = w);
    delay = Math.min(delay * 2, PROBE_DELAY_MAX);
    if (!warned && Date.now() - started >= SLOW_START) {
      warned = true;
      log(`seaport: nothing accepts connections on port ${port} yet`);
    }
  }
  return false;
}

/** Whether a TCP connection to `host:port` succeeds within the timeout. */
function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const finish = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), PROBE_TIMEOUT);
    socket.once("connect", () => finish(true));
    socket.once("error", () => finish(false));
  });
}

/**
 * Sleeps `ms`; `setWake` gets a function that ends the sleep early (and gets
 * `undefined` once the sleep is over).
 */
function pause(
  ms: number,
  setWake: (wake: (() => void) | undefined) => void,
): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      setWake(undefined);
      resolve();
    };
    const timer = setTimeout(done, ms);
    setWake(done);
  });
}
