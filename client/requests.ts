/**
 * The request pipeline: ids, the map of requests waiting for their reply,
 * and the queue of calls made while the connection is down (sent once it is
 * up; requests cut off by a lost connection are sent again or dropped).
 *
 * @module
 */
import type { Outbox } from "../_outbox.ts";
import { ConnectionError, errorFromWire } from "../errors.ts";
import { encodeRequest, type Reply, type Request } from "../protocol.ts";
import type { JsonValue } from "../registry.ts";

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K>
  : never;
/** A request without its id. */
export type Body = DistributiveOmit<Request, "id">;

/** A request on its way. */
export interface Pending {
  readonly body: Body;
  readonly resolve: (v: JsonValue) => void;
  readonly reject: (err: unknown) => void;
  /** On a lost connection: send again after reconnecting, or drop. */
  readonly retry: boolean;
  /** Called instead of a rejection when a non-retried request is dropped. */
  readonly onDrop?: () => void;
  id?: number;
}

/** A request whose reply matters to no one. */
export function quiet(body: Body): Pending {
  return {
    body,
    retry: false,
    onDrop: () => {},
    resolve: () => {},
    reject: () => {},
  };
}

/** What the pipeline asks of the connection. */
export interface Link {
  /** Whether the connection is up and authenticated. */
  readonly connected: boolean;
  /** Whether the client is closed. */
  readonly closed: boolean;
}

/** The client's requests, sent, waiting and queued. */
export class Requests {
  #link: Link;
  #report: (err: unknown) => void;
  #outbox: Outbox | undefined;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #queue: Pending[] = [];

  constructor(link: Link, report: (err: unknown) => void) {
    this.#link = link;
    this.#report = report;
  }

  /** A connection is open: what is transmitted goes on it. */
  attach(outbox: Outbox): void {
    this.#outbox = outbox;
  }

  /** Sends now, on the connection being set up or up. */
  transmit(p: Pending): void {
    const id = this.#nextId++;
    p.id = id;
    this.#pending.set(id, p);
    this.#outbox!.send(encodeRequest(id, p.body));
  }

  /** Sends a request now, bypassing the queue (handshake only). */
  direct(body: Body): Promise<JsonValue> {
    return new Promise((resolve, reject) => {
      this.transmit({ body, resolve, reject, retry: false });
    });
  }

  /** Sends `p` now when connected, or once connected. */
  send(p: Pending): void {
    if (this.#link.connected) this.transmit(p);
    else this.#queue.push(p);
  }

  /** A request: sent now when connected, queued until then. */
  request(body: Body, retry = true): Promise<JsonValue> {
    if (this.#link.closed) {
      return Promise.reject(
        new ConnectionError("The client is closed", {}, "CLOSED"),
      );
    }
    return new Promise((resolve, reject) => {
      this.send({ body, resolve, reject, retry });
    });
  }

  /**
   * Takes back a request nobody waits for any more: out of the queue, or
   * cancelled on the server when it was sent.
   */
  withdraw(p: Pending): void {
    const i = this.#queue.indexOf(p);
    if (i >= 0) this.#queue.splice(i, 1);
    if (p.id !== undefined && this.#pending.delete(p.id)) {
      this.transmit(quiet({ op: "cancel", target: p.id }));
    }
  }

  /** Routes a reply to the request it answers. */
  answer(msg: Reply): void {
    if (msg.id === null) {
      if ("error" in msg) this.#report(errorFromWire(msg.error));
      return;
    }
    const p = this.#pending.get(msg.id);
    if (p === undefined) return; // a cancelled get answered meanwhile
    this.#pending.delete(msg.id);
    if ("error" in msg) p.reject(errorFromWire(msg.error));
    else p.resolve(msg.result);
  }

  /** The connection is up: sends what was queued while it was down. */
  flush(): void {
    const queue = this.#queue;
    this.#queue = [];
    for (const p of queue) this.transmit(p);
  }

  /**
   * The connection was lost: requests to retry go back to the front of the
   * queue; the others are dropped or rejected.
   */
  lost(): void {
    this.#outbox = undefined;
    const lost = new ConnectionError("The connection to the server was lost");
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    const again: Pending[] = [];
    for (const p of pending) {
      if (p.retry && !this.#link.closed) again.push(p);
      else if (p.onDrop !== undefined) p.onDrop();
      else p.reject(lost);
    }
    this.#queue = again.concat(this.#queue);
  }

  /** Rejects every request, sent or queued, with `err`. */
  rejectAll(err: unknown): void {
    const all = [...this.#pending.values(), ...this.#queue];
    this.#pending.clear();
    this.#queue = [];
    for (const p of all) p.reject(err);
  }
}
