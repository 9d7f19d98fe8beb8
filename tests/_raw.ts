/**
 * A raw line-level client for wire tests: sends exact bytes, reads replies.
 *
 * @module
 */
import { LINE_TOO_LONG, LineSplitter } from "../protocol.ts";
import type { ServiceRecord } from "../mod.ts";
import type { Conn, Transport } from "../transport.ts";
import { within } from "./_helpers.ts";

/** A raw connection to a server. */
export interface Raw extends AsyncDisposable {
  /** Sends a string (add the newline yourself) or bytes. */
  send(data: string | Uint8Array): Promise<void>;
  /** Sends one JSON message as a line. */
  json(message: unknown): Promise<void>;
  /** The next message from the server, parsed. */
  next(ms?: number): Promise<Record<string, unknown>>;
  /** Resolves when the server closes the connection. */
  readonly closed: Promise<void>;
  close(): void;
}

/** Connects to `port` on 127.0.0.1 and speaks raw lines. */
export async function raw(t: Transport, port: number): Promise<Raw> {
  const conn = await t.connect({ hostname: "127.0.0.1", port });
  const lines: string[] = [];
  let waiters: (() => void)[] = [];
  const wake = () => {
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };
  const splitter = new LineSplitter(1 << 24);
  const reader = conn.readable.getReader();
  const closed = (async () => {
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        splitter.push(value, (l) => {
          if (l !== LINE_TOO_LONG) lines.push(l);
          wake();
        });
      }
    } catch { /* reset */ }
    wake();
  })();
  let ended = false;
  closed.then(() => ended = true);
  const enc = new TextEncoder();
  const r: Raw = {
    send: (d) => conn.write(typeof d === "string" ? enc.encode(d) : d),
    json: (m) => conn.write(enc.encode(JSON.stringify(m) + "\n")),
    async next(ms = 3000) {
      const get = async () => {
        while (lines.length === 0) {
          if (ended) throw new Error("The server closed the connection");
          await new Promise<void>((res) => waiters.push(res));
        }
        return JSON.parse(lines.shift()!);
      };
      return await within(get(), ms, "a reply from the server");
    },
    closed,
    close: () => conn.close(),
    async [Symbol.asyncDispose]() {
      conn.close();
      await closed;
    },
  };
  return r;
}

/** Connects and completes the handshake (no secret). */
export async function greeted(
  t: Transport,
  port: number,
  fields: Record<string, unknown> = {},
): Promise<Raw> {
  const r = await raw(t, port);
  await r.json({ id: 0, op: "hello", v: 1, ...fields });
  const hello = await r.next();
  if (!("result" in hello)) throw new Error(JSON.stringify(hello));
  return r;
}

/**
 * Allocates `n` visible ports for `role` on `r`, one request at a time
 * (ids from `id` on), and asserts that each succeeded.
 */
export async function allocateEach(
  r: Raw,
  role: string,
  n: number,
  id: number,
): Promise<ServiceRecord[]> {
  const got: ServiceRecord[] = [];
  for (let i = 0; i < n; i++) {
    await r.json({ id: id + i, op: "allocate", role, ready: true });
    const reply = await r.next();
    if (!("result" in reply)) throw new Error(JSON.stringify(reply));
    got.push(reply.result as ServiceRecord);
  }
  return got;
}

/** A request as a fake server sees it. */
export type Req = { id: number; op: string } & { [key: string]: unknown };

/**
 * What a fake server does with each request: answer it, hang up, refuse it
 * with an error, or nothing; `say` writes any other message (an event).
 */
export type Script = (
  req: Req,
  answer: (result: unknown) => void,
  hangUp: () => void,
  refuse: (code: string, message: string) => void,
  say: (message: unknown) => void,
) => void;

/** A hello answer without authentication. */
export const HELLO = { v: 1, host: "127.0.0.1", auth: null };

/** The record a fake server answers an `allocate` of `req.role` with. */
export function fakeRecord(req: Req, port: number) {
  return {
    host: "127.0.0.1",
    port,
    role: String(req.role).split("@")[0],
    version: "1.0.0",
    env: "",
    id: `x-${port}`,
  };
}

/**
 * A fake server that follows `script`, for servers that misbehave the way a
 * stopped process, a vanished host or an overloaded server does.
 */
export async function fakeServer(t: Transport, script: Script) {
  const listener = await t.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Conn[] = [];
  const reads: Promise<void>[] = [];
  const enc = new TextEncoder();
  const serveOne = async (conn: Conn) => {
    const splitter = new LineSplitter();
    const reader = conn.readable.getReader();
    const refuse = (id: number) => (code: string, message: string) =>
      conn.write(
        enc.encode(JSON.stringify({ id, error: { code, message } }) + "\n"),
      )
        .catch(() => {});
    const say = (message: unknown) =>
      conn.write(enc.encode(JSON.stringify(message) + "\n")).catch(() => {});
    const answer = (id: number) => (result: unknown) => say({ id, result });
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        splitter.push(value, (line) => {
          if (line === LINE_TOO_LONG) return;
          const req = JSON.parse(line) as Req;
          script(
            req,
            answer(req.id),
            () => conn.close(),
            refuse(req.id),
            say,
          );
        });
      }
    } catch { /* closed */ }
  };
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      reads.push(serveOne(conn));
    }
  })();
  return {
    port: listener.addr.port,
    get accepted() {
      return conns.length;
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const c of conns) c.close();
      await accepting;
      await Promise.all(reads);
    },
  };
}
