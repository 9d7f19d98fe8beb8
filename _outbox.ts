/**
 * A write queue for one connection: a line sent while nothing is being
 * written goes out at once (no waiting for the end of the turn: a wake-up's
 * answer leaves before the rest of the work that caused it); lines sent while
 * a write is in flight go out together in the next one. One write is in
 * flight at a time, and the bytes waiting are bounded.
 *
 * @module
 */
import type { Conn } from "./transport.ts";

const encoder = new TextEncoder();

/**
 * Buffers to encode into, shared by every connection: one is taken for each
 * write in flight and given back when it is done, so writing allocates no
 * new bytes (a fresh `Uint8Array` per write was the largest source of the
 * server's garbage in a wake-up loop, and so of its minor GC pauses).
 */
const pool: Uint8Array[] = [];
const POOL_MAX = 16;
const BUFFER_BYTES = 16 * 1024;

/** Below this many characters, ASCII is copied by hand (see encodeShort). */
const SHORT = 512;
/** A queue that held more lines than this is not kept for the next ones. */
const QUEUE_KEPT = 64;

/**
 * Encodes `text` into `buf` (which has room for it), returning the bytes
 * written. A short ASCII text is copied unit by unit: `encodeInto()` costs
 * a result object per call, and on Deno a call into the runtime, more than
 * the copy of a line of a few hundred characters.
 */
function encodeShort(text: string, buf: Uint8Array): number {
  const n = text.length;
  if (n <= SHORT) {
    let i = 0;
    for (; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c > 0x7f) break;
      buf[i] = c;
    }
    if (i === n) return n;
  }
  return encoder.encodeInto(text, buf).written;
}

/** Writes lines at once when idle, batched while a write is in flight. */
export class Outbox {
  #conn: Conn;
  /** Lines waiting for the write in flight: the first `#count`. */
  #queue: string[] = [];
  #count = 0;
  #queued = 0;
  #writing = false;
  #dead = false;
  #maxQueued: number;
  #onFail: (err: unknown) => void;
  #idle: (() => void)[] = [];
  /** The pooled buffer of the write in flight, if it uses one. */
  #buf: Uint8Array | undefined;

  /**
   * @param conn The connection to write to.
   * @param maxQueued The most characters that may wait; past it the
   * connection is closed (a peer that does not read).
   * @param onFail Called once when a write fails or the queue overflows.
   */
  constructor(
    conn: Conn,
    maxQueued: number,
    onFail: (err: unknown) => void,
  ) {
    this.#conn = conn;
    this.#maxQueued = maxQueued;
    this.#onFail = onFail;
  }

  /** Queues one encoded line. */
  send(line: string): void {
    if (this.#dead) return;
    if (!this.#writing && line.length <= this.#maxQueued) {
      this.#write(line); // idle: at once, without the queue
      return;
    }
    this.#queue[this.#count++] = line;
    this.#queued += line.length;
    if (this.#queued > this.#maxQueued) {
      this.#fail(new Error(`more than ${this.#maxQueued} bytes unread`));
      return;
    }
    if (!this.#writing) this.#flush();
  }

  /** Resolves once everything queued so far has been written (or failed). */
  drained(): Promise<void> {
    if (!this.#writing) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #fail(err: unknown): void {
    if (this.#dead) return;
    this.#dead = true;
    this.#queue = [];
    this.#count = 0;
    this.#queued = 0;
    this.#onFail(err);
  }

  /**
   * Writes what is queued, then (when that write is done) what was queued
   * meanwhile. Not an async function: a write costs one promise reaction,
   * not a suspended function's promise and context.
   */
  #flush(): void {
    const q = this.#queue;
    const n = this.#count;
    let text = q[0]!;
    q[0] = "";
    for (let i = 1; i < n; i++) {
      text += q[i]!;
      q[i] = "";
    }
    // The array is kept (emptying it would drop its storage, which the
    // next lines would allocate again), unless a burst made it large.
    if (n > QUEUE_KEPT) this.#queue = [];
    this.#count = 0;
    this.#queued = 0;
    this.#write(text);
  }

  #write(text: string): void {
    this.#writing = true;
    // Up to 3 bytes per UTF-16 unit: a short text fits a pooled buffer.
    const buf = text.length * 3 <= BUFFER_BYTES
      ? pool.pop() ?? new Uint8Array(BUFFER_BYTES)
      : undefined;
    this.#buf = buf;
    let written: Promise<void>;
    try {
      written = this.#conn.write(
        buf === undefined
          ? encoder.encode(text)
          : buf.subarray(0, encodeShort(text, buf)),
      );
    } catch (err) {
      this.#failed(err);
      return;
    }
    written.then(this.#written, this.#failed);
  }

  #written = (): void => {
    const buf = this.#buf;
    this.#buf = undefined;
    // Only after a write that completed: a failed one may still be
    // referenced by the runtime.
    if (buf !== undefined && pool.length < POOL_MAX) pool.push(buf);
    if (this.#count > 0 && !this.#dead) this.#flush();
    else this.#done();
  };

  #failed = (err: unknown): void => {
    this.#buf = undefined;
    this.#fail(err);
    this.#done();
  };

  #done(): void {
    this.#writing = false;
    if (this.#idle.length === 0) return;
    const idle = this.#idle;
    this.#idle = [];
    for (const resolve of idle) resolve();
  }
}
