/**
 * Helpers of the command-line tests: `main()` with captured output, the real
 * `seaport` as a subprocess (`deno run cli.ts` on Deno, the installed
 * package's bin on Node, or `$SEAPORT_CLI`), and the fixture HTTP server.
 *
 * @module
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { get } from "node:http";
import { createServer as createNetServer } from "node:net";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import type { Io } from "../cli.ts";
import { runtime, within } from "./_helpers.ts";

export const here = dirname(fileURLToPath(import.meta.url));
export const root = join(here, "..");
export const fixture = join(here, "fixtures", "http_server.mjs");
export const WAIT = 10_000;

/** An Io that records what main writes, with a way to wait for a line. */
export function capture(
  env: Record<string, string> = {},
  signal?: AbortSignal,
) {
  const out: string[] = [];
  const err: string[] = [];
  let wake = () => {};
  const io: Io = {
    stdout: (s) => (out.push(s), wake()),
    stderr: (s) => (err.push(s), wake()),
    env,
    ...(signal !== undefined ? { signal } : {}),
  };
  const line = (re: RegExp) =>
    within(
      new Promise<RegExpExecArray>((resolve) => {
        const check = () => {
          const m = re.exec(out.join(""));
          if (m !== null) resolve(m);
        };
        wake = check;
        check();
      }),
      WAIT,
      `output matching ${re}`,
    );
  return { io, line, out: () => out.join(""), err: () => err.join("") };
}

/**
 * A loopback port nothing listens on now: for the unreachable server, and
 * for `--range P-P` so that the services started here collide with nothing.
 */
export async function closedPort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const { port } = s.address() as { port: number };
  await new Promise((resolve) => s.close(resolve));
  return port;
}

/** A running subprocess with its output split into lines. */
export interface Proc extends AsyncDisposable {
  readonly child: ChildProcess;
  /** Resolves when it exited and its output streams closed. */
  readonly closed: Promise<{ code: number | null; signal: string | null }>;
  /**
   * The next line of `stream` (after earlier matches) matching `re`; the
   * match's `input` is the whole line.
   */
  line(re: RegExp, stream?: "stdout" | "stderr"): Promise<RegExpExecArray>;
  /** Everything written so far. */
  text(stream: "stdout" | "stderr"): string;
  /**
   * Sends a signal. (Not `child.kill()`: on Deno it makes the exit status
   * read as killed by that signal even when the process handled it.)
   */
  signal(sig: "SIGINT" | "SIGTERM"): void;
}

export function start(
  cmd: string[],
  args: string[],
  env: object = {},
  cwd?: string,
): Proc {
  const [program = "", ...pre] = cmd;
  const child = spawn(program, [...pre, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
    ...(cwd !== undefined ? { cwd } : {}),
  });
  const lines = { stdout: [] as string[], stderr: [] as string[] };
  const cursor = { stdout: 0, stderr: 0 };
  const fixturePids = new Set<number>(); // killed on dispose, in case
  let notify = () => {};
  for (const stream of ["stdout", "stderr"] as const) {
    let buffer = "";
    child[stream]!.setEncoding("utf8");
    child[stream]!.on("data", (chunk: string) => {
      buffer += chunk;
      let i;
      while ((i = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 1);
        lines[stream].push(line);
        const pid = /"event":"start","pid":(\d+)/.exec(line)?.[1];
        if (pid !== undefined) fixturePids.add(Number(pid));
      }
      notify();
    });
  }
  let done = false;
  const closed = new Promise<{ code: number | null; signal: string | null }>(
    (resolve) =>
      child.once("close", (code, signal) => {
        done = true;
        notify();
        resolve({ code, signal });
      }),
  );
  const text = (stream: "stdout" | "stderr") =>
    lines[stream].map((l) => l + "\n").join("");
  const describe = () =>
    `\n--- ${args.join(" ")}\nstdout:\n${text("stdout")}stderr:\n${
      text("stderr")
    }`;
  return {
    child,
    closed,
    text,
    signal: (sig) => process.kill(child.pid!, sig),
    line(re, stream = "stdout") {
      const found = new Promise<RegExpExecArray>((resolve, reject) => {
        const check = () => {
          const all = lines[stream];
          for (let i = cursor[stream]; i < all.length; i++) {
            const m = re.exec(all[i]!);
            if (m === null) continue;
            cursor[stream] = i + 1;
            notify = () => {}; // a settled wait must not take later lines
            return resolve(m);
          }
          if (done) reject(new Error(`Exited without ${re}${describe()}`));
        };
        notify = check;
        check();
      });
      return within(found, WAIT, `${stream} line ${re}${describe()}`);
    },
    async [Symbol.asyncDispose]() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
      }
      for (const pid of fixturePids) {
        try {
          process.kill(pid, "SIGKILL");
        } catch { /* gone already */ }
      }
      await within(closed, WAIT, `exit of ${args.join(" ")}`);
    },
  };
}

/** Runs to completion; resolves with the exit code and output. */
export async function run(cmd: string[], args: string[], env: object = {}) {
  await using p = start(cmd, args, env);
  const started = Date.now();
  const { code } = await within(p.closed, WAIT, `seaport ${args.join(" ")}`);
  return {
    code,
    ms: Date.now() - started,
    stdout: p.text("stdout"),
    stderr: p.text("stderr"),
  };
}

/** HTTP GET to a loopback port; resolves with the body. */
export function fetchBody(port: number): Promise<string> {
  const body = new Promise<string>((resolve, reject) => {
    const req = get({ host: "127.0.0.1", port, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => text += d);
      res.on("end", () => resolve(text));
    });
    req.on("error", reject);
  });
  return within(body, WAIT, `GET 127.0.0.1:${port}`);
}

/** How to run the fixture server: with Node when it is installed. */
export const fixtureCommand: string[] = runtime === "node" ||
    spawnSync("node", ["--version"]).status === 0
  ? ["node", fixture]
  : [process.execPath, "run", "-A", fixture];

/** How to run the CLI: `$SEAPORT_CLI`, `deno run cli.ts`, or the npm bin. */
export function cliCommand(): string[] | string {
  const configured = process.env.SEAPORT_CLI;
  if (configured) {
    return configured.startsWith("[")
      ? JSON.parse(configured)
      : configured.split(/\s+/).filter(Boolean);
  }
  if (runtime === "deno") {
    return [process.execPath, "run", "-A", join(root, "cli.ts")];
  }
  for (let dir = here; dir !== dirname(dir); dir = dirname(dir)) {
    const pkg = join(dir, "package.json");
    if (!existsSync(pkg)) continue;
    const { bin } = JSON.parse(readFileSync(pkg, "utf8"));
    const path = typeof bin === "string" ? bin : bin?.seaport;
    if (path) return [process.execPath, join(dir, path)];
  }
  return "no seaport bin found next to the tests; set SEAPORT_CLI";
}

export { skip } from "./_helpers.ts";
