/**
 * Child processes for the liveness, restart and churn tests: a seaport client
 * or server (tests/fixtures/holder.mjs) run with the runtime that runs the
 * tests, spoken to through JSON lines on stdin and stdout. Disposing kills it.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { runtime, within } from "./_helpers.ts";

const fixture = fileURLToPath(
  new URL("./fixtures/holder.mjs", import.meta.url),
);

/** One JSON line the fixture printed. */
export type Line = { event: string; pid: number; at: number } & {
  [key: string]: unknown;
};

/** A running fixture process. */
export interface Holder extends AsyncDisposable {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves with the next line of `event` not taken yet, typed as `T`. */
  next<T extends object = object>(event: string, ms?: number): Promise<T>;
  /** Sends a command line to its stdin. */
  send(command: object): void;
  /**
   * Sends a signal. (Not `child.kill()`: Deno's node:child_process closes the
   * child's pipes and ignores later signals after the first `kill()`.)
   */
  signal(signal: "SIGSTOP" | "SIGCONT" | "SIGKILL" | "SIGTERM"): void;
  /** Resolves when it has exited. */
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
}

/**
 * Starts `holder.mjs` in `mode` with `options`. `gc` runs it with the garbage
 * collector exposed (`--v8-flags=--expose-gc` on Deno, `--expose-gc` on Node).
 */
export function holder(
  mode: "client" | "server",
  options: object,
  { gc = false }: { gc?: boolean } = {},
): Holder {
  const flags = runtime === "deno"
    ? ["run", "-A", ...(gc ? ["--v8-flags=--expose-gc"] : [])]
    : gc
    ? ["--expose-gc"]
    : [];
  const child = spawn(
    process.execPath,
    [...flags, fixture, mode, JSON.stringify(options)],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  const lines: Line[] = [];
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const w of [...waiters]) w();
  };
  let buffer = "";
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (chunk: string) => {
    buffer += chunk;
    let i;
    while ((i = buffer.indexOf("\n")) >= 0) {
      lines.push(JSON.parse(buffer.slice(0, i)));
      buffer = buffer.slice(i + 1);
    }
    wake();
  });
  let done = false;
  const exited = new Promise<{ code: number | null; signal: string | null }>(
    (resolve) =>
      child.once("close", (code, signal) => {
        done = true;
        wake();
        resolve({ code, signal });
      }),
  );
  child.stdin!.on("error", () => {}); // it may be gone already
  return {
    child,
    pid: child.pid!,
    exited,
    next<T extends object>(event: string, ms = 10_000): Promise<T> {
      let check = () => {};
      const found = new Promise<Line>((resolve, reject) => {
        check = () => {
          const i = lines.findIndex((l) => l.event === event);
          if (i >= 0) {
            waiters.delete(check);
            resolve(lines.splice(i, 1)[0]!);
          } else if (done) {
            reject(new Error(`holder.mjs ${mode} exited without "${event}"`));
          }
        };
      });
      waiters.add(check);
      check();
      return within(found, ms, `"${event}" from holder.mjs ${mode}`)
        .finally(() => waiters.delete(check)) as Promise<Line & T>;
    },
    signal(signal) {
      process.kill(child.pid!, signal);
    },
    send(command) {
      child.stdin!.write(JSON.stringify(command) + "\n");
    },
    async [Symbol.asyncDispose]() {
      if (!done) {
        try {
          process.kill(child.pid!, "SIGKILL");
        } catch { /* gone already */ }
      }
      child.stdin!.destroy();
      await within(exited, 10_000, `holder.mjs ${mode} to exit`);
    },
  };
}
