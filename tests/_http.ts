/**
 * Helpers for the HTTP side's tests: a server with its HTTP side on loopback,
 * a reader of Server-Sent Events over a real `fetch`, and the paths of the
 * Debian tools some tests need.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import type { ConnectOptions, Ports, Server, ServerOptions } from "../mod.ts";
import { connect, createServer } from "../mod.ts";
import { testStore, within } from "./_helpers.ts";

/** A server with an HTTP side, and clients, all closed on dispose. */
export interface HttpTestServer extends AsyncDisposable {
  readonly server: Server;
  readonly port: number;
  readonly httpPort: number;
  /** `http://127.0.0.1:HTTPPORT`. */
  readonly base: string;
  client(options?: ConnectOptions): Ports;
}

/** Starts a server on 127.0.0.1 with its HTTP side on a free port. */
export async function serveHttp(
  options: ServerOptions = {},
  httpPort = 0,
): Promise<HttpTestServer> {
  const server = createServer({
    ...testStore(),
    ...options,
    http: { hostname: "127.0.0.1", ...options.http, port: httpPort },
  });
  const { port } = await server.listen(0, "127.0.0.1");
  const h = server.httpAddr!.port;
  const clients: Ports[] = [];
  return {
    server,
    port,
    httpPort: h,
    base: `http://127.0.0.1:${h}`,
    client(opts = {}) {
      const c = connect("127.0.0.1", port, opts);
      clients.push(c);
      return c;
    },
    async [Symbol.asyncDispose]() {
      await Promise.all(clients.map((c) => c.close()));
      await server.close();
    },
  };
}

/** One Server-Sent Event. */
export interface Sse {
  id: string | undefined;
  event: string;
  data: string;
}

/** Reads an event stream from a real `fetch`; closed on dispose. */
export class SseReader implements AsyncDisposable {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #abort: AbortController;
  #buffer = "";
  #decoder = new TextDecoder();
  #queue: Sse[] = [];
  ended = false;

  private constructor(res: Response, abort: AbortController) {
    this.#reader = res.body!.getReader();
    this.#abort = abort;
  }

  /** Opens `url` as an event stream; rejects unless the answer is 200. */
  static async open(
    url: string,
    headers: Record<string, string> = {},
  ): Promise<SseReader> {
    const abort = new AbortController();
    const res = await fetch(url, { headers, signal: abort.signal });
    if (res.status !== 200) {
      const body = await res.text();
      throw new Error(`GET ${url}: ${res.status} ${body}`);
    }
    return new SseReader(res, abort);
  }

  /** The next event (comments and `retry:` lines skipped). */
  next(ms = 5000): Promise<Sse> {
    return within(this.#next(), ms, "the next server-sent event");
  }

  async #next(): Promise<Sse> {
    while (true) {
      const queued = this.#queue.shift();
      if (queued !== undefined) return queued;
      const { done, value } = await this.#reader.read();
      if (done) {
        this.ended = true;
        throw new Error("The event stream ended");
      }
      this.#buffer += this.#decoder.decode(value, { stream: true });
      let end: number;
      while ((end = this.#buffer.indexOf("\n\n")) >= 0) {
        const block = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        const ev: Sse = { id: undefined, event: "message", data: "" };
        let data: string[] | undefined;
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0
            ? ""
            : line.slice(colon + 1).replace(/^ /, "");
          if (field === "id") ev.id = value;
          else if (field === "event") ev.event = value;
          else if (field === "data") (data ??= []).push(value);
        }
        if (data !== undefined) {
          ev.data = data.join("\n");
          this.#queue.push(ev);
        }
      }
    }
  }

  /** Resolves once the server ends the stream. */
  async end(ms = 5000): Promise<void> {
    await within(
      (async () => {
        while (true) {
          const { done } = await this.#reader.read();
          if (done) return;
        }
      })(),
      ms,
      "the end of the event stream",
    );
    this.ended = true;
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#abort.abort();
    return this.#reader.cancel().catch(() => {});
  }
}

/** The path of a program on $PATH or at `path`, or `undefined`. */
export function program(name: string, path?: string): string | undefined {
  if (path !== undefined && existsSync(path)) return path;
  const found = spawnSync("sh", ["-c", `command -v ${name}`], {
    encoding: "utf8",
  });
  const out = found.stdout?.trim();
  return found.status === 0 && out ? out : undefined;
}

export { poll } from "./_helpers.ts";
