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

/** Writes lines at once when idle, batched while a write is in flight. */
export class Outbox {
  #conn: Conn;
  #queue: string[] = [];
  #queued = 0;
  #writing = false;
  #dead = false;
  #maxQueued: number;
  #onFail: (err: unknown) => void;
  #idle: (() => void)[] = [];

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
    this.#queue.push(line);
    this.#queued += line.length;
    if (this.#queued > this.#maxQueued) {
      this.#fail(new Error(`more than ${this.#maxQueued} bytes unread`));
      return;
    }
    if (!this.#writing) void this.#flush();
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
    this.#queued = 0;
    this.#onFail(err);
  }

  async #flush(): Promise<void> {
    this.#writing = true;
    while (this.#queue.length > 0 && !this.#dead) {
      const text = this.#queue.length === 1
        ? this.#queue[0]!
        : this.#queue.join("");
      this.#queue = [];
      this.#queued = 0;
      try {
        await this.#conn.write(encoder.encode(text));
      } catch (err) {
        this.#fail(err);
      }
    }
    this.#writing = false;
    const idle = this.#idle;
    this.#idle = [];
    for (const resolve of idle) resolve();
  }
}
