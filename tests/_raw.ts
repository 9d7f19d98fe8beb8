/**
 * A raw line-level client for wire tests: sends exact bytes, reads replies.
 *
 * @module
 */
import { LINE_TOO_LONG, LineSplitter } from "../protocol.ts";
import type { Transport } from "../transport.ts";
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
export async function greeted(t: Transport, port: number): Promise<Raw> {
  const r = await raw(t, port);
  await r.json({ id: 0, op: "hello", v: 1 });
  const hello = await r.next();
  if (!("result" in hello)) throw new Error(JSON.stringify(hello));
  return r;
}
