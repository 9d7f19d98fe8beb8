/**
 * Port proposals: the server proposes a free port (`peek`), the client checks
 * at once that it can bind it here, and the next new registration asks for
 * it by number, in one round trip instead of allocate, probe, ready. Also
 * the bind probe itself.
 *
 * @module
 */
import type { Transport } from "../transport.ts";
import type { Connection } from "./connection.ts";
import { quiet } from "./requests.ts";

/** How long a checked port proposed by `peek` stays good to take, in ms. */
const HINT_TTL = 1000;

/**
 * What one read of the kernel's socket tables and one test bind are taken
 * to cost, in ms, until measured here: a read walks the kernel's whole
 * socket hash (milliseconds, more with every socket on the host), a bind is
 * about 20 µs. The tables are read for a group of checks only when binding
 * each would cost more, by the averages measured since (a read weighted by
 * {@linkcode READ_WEIGHT}).
 */
const READ_MS = 10;
const BIND_MS = 0.02;
/**
 * A read's time counts this much against binds: it runs off the JavaScript
 * thread, which goes on meanwhile (binds block it). Measured: with a quarter,
 * one client's 10,000 registrations took less time and CPU than with the
 * whole.
 */
const READ_WEIGHT = 0.25;

/** The proposed port this client keeps ready, and the bind probe. */
export class Proposals {
  #conn: Connection;
  #transport: Transport;
  #probe: boolean;
  /**
   * A port the server proposed (`peek`) and this machine could bind when it
   * was proposed: the next new registration asks for it by number, in one
   * round trip instead of allocate, probe, ready.
   */
  #hint: { port: number; epoch: number; at: number } | undefined;
  #peeking = false;
  /** The connection epoch whose server does not know `peek`. */
  #noPeek = -1;
  /** Whether this client allocates ports (and so keeps a hint). */
  #allocates = false;

  constructor(conn: Connection, transport: Transport, probe: boolean) {
    this.#conn = conn;
    this.#transport = transport;
    this.#probe = probe;
  }

  /** This client allocates ports: from now on it keeps a proposal ready. */
  wanted(): void {
    this.#allocates = true;
  }

  /** The checked port to ask for, when there is a fresh one; used once. */
  take(exclude: readonly number[]): number | undefined {
    const h = this.#hint;
    this.#hint = undefined;
    if (
      h === undefined || h.epoch !== this.#conn.epoch ||
      Date.now() - h.at > HINT_TTL || exclude.includes(h.port)
    ) return undefined;
    return h.port;
  }

  /**
   * Asks the server to propose a port and checks at once that it can be
   * bound here (the server's pick has just moved past it, so no other client
   * is about to bind it), so that the next new registration asks for it by
   * number in one round trip.
   */
  peek(): void {
    const conn = this.#conn;
    if (
      this.#peeking || this.#hint !== undefined || !this.#allocates ||
      !conn.connected || !this.#probe || this.#noPeek === conn.epoch
    ) return;
    this.#peeking = true;
    const epoch = conn.epoch;
    conn.requests.transmit({
      ...quiet({ op: "peek" }),
      onDrop: () => this.#peeking = false,
      resolve: async (result) => {
        const port = (result as { port?: unknown } | null)?.port;
        if (
          typeof port === "number" && await this.canBind(port) &&
          conn.epoch === epoch && conn.connected
        ) this.#hint = { port, epoch, at: Date.now() };
        this.#peeking = false;
      },
      reject: () => {
        this.#peeking = false;
        this.#noPeek = epoch; // a server from before `peek`
      },
    });
  }

  /**
   * Whether `port` can be bound on this machine now. The checks asked for in
   * one turn, by every client of the process, are made together: when there
   * are so many (the ports of a `batch`'s reply) that binding each would
   * take longer, by one read of the host's TCP sockets, and a port that any
   * socket uses (listening, connected or closing) is refused; otherwise, and
   * where the tables cannot be read, by a test bind each. A check asked for
   * while a read is under way waits for the next one, so every port is
   * checked after the server reserved it.
   */
  canBind(port: number): Promise<boolean> {
    const read = this.#transport.boundPorts;
    if (read === undefined) return bindCheck(this.#transport, port);
    let tables = shared.get(read);
    if (tables === undefined) shared.set(read, tables = new Tables(read));
    return tables.check(this.#transport, port);
  }
}

/** The checks of one process waiting for a read of the kernel's tables. */
class Tables {
  #read: () => Promise<ReadonlySet<number> | undefined>;
  #waiting: {
    transport: Transport;
    port: number;
    done: (ok: boolean) => void;
  }[] = [];
  #reading = false;
  #scheduled = false;
  /** The kernel's tables cannot be read here: every check binds. */
  #unreadable = false;
  /** Running averages of a read of the tables and of a bind, in ms. */
  #readMs = READ_MS;
  #bindMs = BIND_MS;

  constructor(read: () => Promise<ReadonlySet<number> | undefined>) {
    this.#read = read;
  }

  check(transport: Transport, port: number): Promise<boolean> {
    if (this.#unreadable) return bindCheck(transport, port);
    return new Promise((done) => {
      this.#waiting.push({ transport, port, done });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#reading || this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      void this.#check();
    });
  }

  async #check(): Promise<void> {
    const group = this.#waiting;
    this.#waiting = [];
    let bound: ReadonlySet<number> | undefined;
    if (group.length * this.#bindMs > this.#readMs * READ_WEIGHT) {
      this.#reading = true;
      const t0 = performance.now();
      bound = await this.#read().catch(() => undefined);
      this.#readMs = average(this.#readMs, performance.now() - t0);
      this.#reading = false;
      if (bound === undefined) this.#unreadable = true;
    }
    if (bound !== undefined) {
      for (const { port, done } of group) done(!bound.has(port));
    } else {
      const t0 = performance.now();
      for (const { transport, port, done } of group) {
        done(await bindCheck(transport, port));
      }
      this.#bindMs = average(
        this.#bindMs,
        (performance.now() - t0) / group.length,
      );
    }
    if (this.#waiting.length > 0) this.#schedule();
  }
}

/** A running average that follows changes within a few samples. */
function average(avg: number, sample: number): number {
  return avg + (sample - avg) / 4;
}

/** Every process's table reader, by the transport function that reads. */
const shared = new WeakMap<
  () => Promise<ReadonlySet<number> | undefined>,
  Tables
>();

/** Whether a test bind of `port` on every address succeeds now. */
async function bindCheck(transport: Transport, port: number): Promise<boolean> {
  try {
    const l = await transport.listen({ hostname: "0.0.0.0", port });
    l.close();
    return true;
  } catch {
    return false;
  }
}
