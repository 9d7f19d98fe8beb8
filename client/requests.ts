/**
 * The request pipeline: ids, the map of requests waiting for their reply,
 * and the queue of calls made while the connection is down (sent once it is
 * up; requests cut off by a lost connection are sent again or dropped).
 *
 * @module
 */
import { IdMap } from "../_ids.ts";
import type { Outbox } from "../_outbox.ts";
import {
  ConnectionError,
  errorFromWire,
  ProtocolError,
  type WireError,
} from "../errors.ts";
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
  /**
   * For an `allocate` that picks its port: ports in use on this host, to be
   * passed over too (a batch's `exclude`, or added to the request's own).
   */
  readonly avoid?: readonly number[] | undefined;
  id?: number;
}

/** Does nothing: for a request's callbacks that have nothing to do. */
export const NOOP = (): void => {};

/** A request whose reply matters to no one. */
export function quiet(body: Body): Pending {
  return { body, retry: false, onDrop: NOOP, resolve: NOOP, reject: NOOP };
}

/** The operations that travel in a `batch` when the server takes one. */
const BATCHABLE: ReadonlySet<string> = new Set([
  "allocate",
  "ready",
  "unready",
  "assume",
  "free",
]);

/**
 * The bytes of an item's answer in a batch's reply, at most: `{}` for
 * `ready`/`unready`, else a record (the item's role and meta, and the
 * host, port, env, version and id).
 */
function replyCost(op: string, itemBytes: number, host: number): number {
  return op === "ready" || op === "unready" ? 16 : itemBytes + 128 + host;
}

// deno-lint-ignore no-control-regex
const ASCII = /^[\x00-\x7f]*$/;

/**
 * The body of `p` sent on its own: an allocation's `avoid` (here the
 * ports a batch of it would pass over) joins its `exclude`.
 */
function alone(p: Pending, avoid: readonly number[] | undefined): Body {
  const body = p.body;
  if (avoid === undefined || avoid.length === 0 || body.op !== "allocate") {
    return body;
  }
  return {
    ...body,
    exclude: [...new Set([...(body.exclude ?? []), ...avoid])],
  };
}

/** A `batch` on its way: the requests it carries, in order. */
interface BatchPending extends Pending {
  readonly items: Pending[];
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
  #pending = new IdMap<Pending>(64);
  #queue: Pending[] = [];
  /** The most items per `batch` this server takes; 0: it has no `batch`. */
  #batchMax = 0;
  /** The most bytes of a `batch` line, and of its reply. */
  #batchBytes = 0;
  #replyBytes = 0;
  /** The length of the host the server registers this client under. */
  #host = 0;
  /** Requests of this turn that go out together in a `batch`. */
  #batch: Pending[] = [];
  #batchLines: string[] = [];
  /** The ports this turn's batch passes over (its items' `avoid`). */
  #batchAvoid: readonly number[] | undefined;
  #batchCost = 0;
  #replyCost = 0;
  #flushing = false;

  constructor(link: Link, report: (err: unknown) => void) {
    this.#link = link;
    this.#report = report;
  }

  /** A connection is open: what is transmitted goes on it. */
  attach(outbox: Outbox): void {
    this.#outbox = outbox;
  }

  /**
   * What the server's hello said of `batch`: the most items per batch
   * (0: it has none) and its longest line; `maxLine` is this client's, and
   * `host` the host the server registers it under.
   */
  batching(
    max: number,
    serverLine: number,
    maxLine: number,
    host: string,
  ): void {
    this.#batchMax = max;
    this.#batchBytes = serverLine - 64;
    this.#replyBytes = maxLine - 64;
    this.#host = host.length;
  }

  /**
   * Sends now, on the connection being set up or up. Registration changes
   * made in the same turn go out together, as one `batch` at the end of the
   * turn, when the server takes it; any other request sends them first, so
   * the order on the wire is the order of the calls.
   */
  transmit(p: Pending): void {
    if (this.#batchMax > 0 && BATCHABLE.has(p.body.op)) {
      const line = JSON.stringify(p.body);
      // in bytes: UTF-16 code units take at most 3
      const wide = ASCII.test(line) ? 1 : 3;
      const avoid = p.avoid !== undefined && p.avoid !== this.#batchAvoid
        ? p.avoid
        : undefined;
      const cost = wide * line.length + 1 + (avoid?.length ?? 0) * 6;
      const reply = wide * replyCost(p.body.op, line.length, this.#host);
      if (cost <= this.#batchBytes && reply <= this.#replyBytes) {
        if (
          this.#batch.length >= this.#batchMax ||
          this.#batchCost + cost > this.#batchBytes ||
          this.#replyCost + reply > this.#replyBytes ||
          (avoid !== undefined && this.#batchAvoid !== undefined)
        ) this.#sendBatch(); // a batch has one list of ports to pass over
        if (avoid !== undefined) this.#batchAvoid = avoid;
        this.#batch.push(p);
        this.#batchLines.push(line);
        this.#batchCost += cost;
        this.#replyCost += reply;
        if (!this.#flushing) {
          this.#flushing = true;
          queueMicrotask(() => {
            this.#flushing = false;
            this.#sendBatch();
          });
        }
        return;
      }
    }
    if (this.#batch.length > 0) this.#sendBatch();
    const id = this.#nextId++;
    p.id = id;
    this.#pending.set(id, p);
    this.#outbox!.send(encodeRequest(id, alone(p, p.avoid)));
  }

  /** Sends the batch of this turn: alone as itself, else as one `batch`. */
  #sendBatch(): void {
    const items = this.#batch;
    const lines = this.#batchLines;
    const avoid = this.#batchAvoid;
    if (items.length === 0 || this.#outbox === undefined) return;
    this.#unbatch();
    const id = this.#nextId++;
    if (items.length === 1) {
      const p = items[0]!;
      p.id = id;
      this.#pending.set(id, p);
      this.#outbox.send(
        avoid === undefined
          ? `{"id":${id},${lines[0]!.slice(1)}\n`
          : encodeRequest(id, alone(p, avoid)),
      );
      return;
    }
    const batch: BatchPending = {
      body: { op: "batch" } as Body,
      items,
      retry: false,
      resolve: (result) => {
        if (!Array.isArray(result) || result.length !== items.length) {
          return batch.reject(
            new ProtocolError(
              "PROTOCOL",
              `The server answered a batch of ${items.length} with something else`,
            ),
          );
        }
        for (let i = 0; i < items.length; i++) {
          const r = result[i] as { result?: JsonValue; error?: WireError };
          if (r?.error !== undefined) items[i]!.reject(errorFromWire(r.error));
          else items[i]!.resolve(r?.result ?? null);
        }
      },
      reject: (err) => {
        for (const p of items) p.reject(err);
      },
    };
    for (const p of items) p.id = id;
    this.#pending.set(id, batch);
    const exclude = avoid === undefined || avoid.length === 0
      ? ""
      : `"exclude":${JSON.stringify(avoid)},`;
    this.#outbox.send(
      `{"id":${id},"op":"batch",${exclude}"ops":[${lines.join(",")}]}\n`,
    );
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
    if (p.id !== undefined && this.#pending.get(p.id) === p) {
      this.#pending.delete(p.id);
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
    this.#batchMax = 0; // until the next server says it takes batches
    const lost = new ConnectionError("The connection to the server was lost");
    const pending = [...this.#pending.values()].flatMap((p) =>
      "items" in p ? (p as BatchPending).items : [p]
    ).concat(this.#unbatch());
    this.#pending.clear();
    const again: Pending[] = [];
    for (const p of pending) {
      if (p.retry && !this.#link.closed) again.push(p);
      else if (p.onDrop !== undefined) p.onDrop();
      else p.reject(lost);
    }
    this.#queue = again.concat(this.#queue);
  }

  /** Takes back the requests of this turn's batch, not yet sent. */
  #unbatch(): Pending[] {
    const items = this.#batch;
    this.#batch = [];
    this.#batchLines = [];
    this.#batchAvoid = undefined;
    this.#batchCost = 0;
    this.#replyCost = 0;
    return items;
  }

  /** Rejects every request, sent or queued, with `err`. */
  rejectAll(err: unknown): void {
    const all = [...this.#pending.values(), ...this.#unbatch(), ...this.#queue];
    this.#pending.clear();
    this.#queue = [];
    for (const p of all) p.reject(err);
  }
}
