/**
 * Worker processes for the benchmark: spawning, JSON-lines RPC with a timeout
 * on every call, signals, and a registry of every live child so that nothing
 * outlives the run.
 *
 * @module
 */
import { fileURLToPath, pathToFileURL } from "node:url";
import type { ArgsOf, Commands, ResultOf, WorkerReply } from "./_types.ts";

const live = new Set<WorkerProc>();

/** How to start a worker: the program and its arguments. */
export interface Launch {
  /** A label for messages (`ours-deno`, `theirs`, …). */
  label: string;
  /** The executable. */
  cmd: string;
  /** Its arguments. */
  args: string[];
  /** The working directory. */
  cwd: string;
}

/**
 * Our worker on Deno (`bench/_ours_worker.ts` with this checkout's mod.ts),
 * with `gc()` exposed for the heap figures.
 */
export function oursDenoLaunch(label = "ours-deno"): Launch {
  const root = fileURLToPath(new URL("..", import.meta.url));
  return {
    label,
    cmd: Deno.execPath(),
    args: [
      "run",
      "--allow-all",
      "--no-lock",
      "--v8-flags=--expose-gc",
      `${root}bench/_ours_worker.ts`,
      pathToFileURL(`${root}mod.ts`).href,
    ],
    cwd: root,
  };
}

/** A worker process spoken to over stdin/stdout. */
export class WorkerProc {
  readonly label: string;
  readonly #child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #pending = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void }
  >();
  #nextId = 1;
  #stderr = "";
  #exit: Deno.CommandStatus | undefined;
  /** Resolves when the process has exited. */
  readonly exited: Promise<void>;

  constructor(launch: Launch) {
    this.label = launch.label;
    // Deno.Command, not node:child_process: Deno rewrites spawns of its own
    // executable there as if they were Node's.
    this.#child = new Deno.Command(launch.cmd, {
      args: launch.args,
      cwd: launch.cwd,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    live.add(this);
    this.#stdin = this.#child.stdin.getWriter();
    this.#stdin.closed.catch(() => {});
    const reading = Promise.all([
      this.#readLines(this.#child.stdout),
      this.#readStderr(this.#child.stderr),
    ]);
    this.exited = this.#child.status.then(async (status) => {
      this.#exit = status;
      live.delete(this);
      await reading.catch(() => {});
      const err = new Error(
        `${this.label} worker exited (${
          status.signal ?? `code ${status.code}`
        })${this.#tail()}`,
      );
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
    });
  }

  async #readLines(stream: ReadableStream<Uint8Array>): Promise<void> {
    let buf = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      buf += text;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        this.#onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
  }

  async #readStderr(stream: ReadableStream<Uint8Array>): Promise<void> {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      this.#stderr = (this.#stderr + text).slice(-4000);
    }
  }

  /** The process id. */
  get pid(): number {
    return this.#child.pid;
  }

  #tail(): string {
    const t = this.#stderr.trim();
    return t === "" ? "" : `; stderr: ${t.slice(-1500)}`;
  }

  #onLine(line: string): void {
    let msg: WorkerReply;
    try {
      msg = JSON.parse(line) as WorkerReply;
    } catch {
      return; // not ours: a stray print
    }
    const p = this.#pending.get(msg.id);
    if (p === undefined) return;
    this.#pending.delete(msg.id);
    if (msg.ok) p.resolve(msg.result);
    else p.reject(new Error(`${this.label}: ${msg.error}`));
  }

  /**
   * Sends a command and waits for its reply.
   *
   * @throws {Error} when the worker fails it, exits, or takes over `timeoutMs`.
   */
  call<K extends keyof Commands>(
    cmd: K,
    args: ArgsOf<K>,
    timeoutMs = 120_000,
  ): Promise<ResultOf<K>> {
    if (this.#exit !== undefined) {
      return Promise.reject(new Error(`${this.label} worker has exited`));
    }
    const id = this.#nextId++;
    return new Promise<ResultOf<K>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new Error(
            `${this.label}: "${cmd}" took longer than ${timeoutMs} ms${this.#tail()}`,
          ),
        );
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as ResultOf<K>);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#stdin.write(
        new TextEncoder().encode(JSON.stringify({ id, cmd, args }) + "\n"),
      ).catch(() => {}); // a dead worker is reported by its exit
    });
  }

  /** Sends a signal (no-op once exited). */
  signal(sig: "SIGKILL" | "SIGSTOP" | "SIGCONT" | "SIGTERM"): void {
    if (this.#exit !== undefined) return;
    try {
      Deno.kill(this.pid, sig);
    } catch { /* already gone */ }
  }

  /** Kills the process and waits until it has exited. */
  async kill(): Promise<void> {
    this.signal("SIGKILL");
    await this.exited;
  }
}

/** Kills every worker still running and waits for them. */
export async function killAll(): Promise<void> {
  await Promise.all([...live].map((w) => w.kill()));
}

/** The number of workers still running. */
export function liveCount(): number {
  return live.size;
}
