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

  /** Whether `port` can be bound on this machine now. */
  async canBind(port: number): Promise<boolean> {
    try {
      const l = await this.#transport.listen({ hostname: "0.0.0.0", port });
      l.close();
      return true;
    } catch {
      return false;
    }
  }
}
