/**
 * Event subscriptions: listeners of server events, filtered by environment,
 * the `subscribe` request made on first use (wider when a listener follows
 * another environment, with a snapshot for `resync` listeners) and made again
 * after every reconnect.
 *
 * @module
 */
import type { Emitter } from "../_emitter.ts";
import type { EventMessage } from "../protocol.ts";
import type { ServiceRecord } from "../registry.ts";
import type { Connection } from "./connection.ts";
import type { EventScope, PortsEvents } from "./ports.ts";

const SERVER_EVENTS = new Set(["allocate", "assume", "free", "resync"]);

/** The client's event listeners and its subscription. */
export class Subscriptions {
  #conn: Connection;
  #emitter: Emitter<PortsEvents>;
  #env: string;
  #report: (err: unknown) => void;
  #subscribed = false;
  /** Whether some listener follows another environment than the client's. */
  #subscribedAll = false;
  /** Server-event listeners as given → as added (filtered by environment). */
  #scoped = new Map<string, Map<unknown, (...args: never[]) => void>>();

  constructor(
    conn: Connection,
    emitter: Emitter<PortsEvents>,
    env: string,
    report: (err: unknown) => void,
  ) {
    this.#conn = conn;
    this.#emitter = emitter;
    this.#env = env;
    this.#report = report;
  }

  /** The connection is up: subscribes again, if subscribed. */
  resubscribe(): void {
    if (this.#subscribed) this.#subscribe();
  }

  /** A server event: to its listeners. */
  event(msg: EventMessage): void {
    this.#emitter.emit(msg.ev, msg.record, msg.unready === true);
  }

  #subscribe(): void {
    const body: { op: "subscribe"; all?: boolean; snapshot?: boolean } = {
      op: "subscribe",
    };
    if (this.#subscribedAll) body.all = true;
    const snapshot = this.#emitter.count("resync") > 0;
    if (snapshot) body.snapshot = true;
    this.#conn.requests.transmit({
      body,
      retry: false,
      onDrop: () => {},
      // called as the reply is read, in order with the events around it
      resolve: (result) => {
        if (snapshot && Array.isArray(result)) {
          this.#emitter.emit("resync", result as unknown as ServiceRecord[]);
        }
      },
      reject: (err) => this.#report(err),
    });
  }

  /** Adds a listener; server events are subscribed on first use. */
  on<K extends keyof PortsEvents>(
    event: K,
    fn: PortsEvents[K],
    scope?: EventScope,
  ): void {
    if (!SERVER_EVENTS.has(event)) {
      this.#emitter.on(event, fn);
      return;
    }
    if (typeof fn !== "function") {
      throw new TypeError("The listener must be a function");
    }
    if (scope?.env !== undefined && typeof scope.env !== "string") {
      throw new TypeError(`The scope's "env" must be a string`);
    }
    this.off(event, fn);
    const own = this.#env;
    const env = scope?.all === true ? null : (scope?.env ?? own);
    const listener = fn as (r: unknown, unready?: boolean) => void;
    const filtered = event === "resync"
      ? (records: ServiceRecord[]) =>
        listener(
          env === null ? records : records.filter((r) => r.env === env),
        )
      : (record: ServiceRecord, unready: boolean) => {
        if (env === null || record.env === env) listener(record, unready);
      };
    let mine = this.#scoped.get(event);
    if (mine === undefined) this.#scoped.set(event, mine = new Map());
    mine.set(fn, filtered);
    this.#emitter.on(event, filtered as PortsEvents[K]);
    const widen = env !== own && !this.#subscribedAll;
    if (widen) this.#subscribedAll = true;
    if (!this.#subscribed || widen || event === "resync") {
      this.#subscribed = true;
      if (this.#conn.connected) this.#subscribe();
    }
  }

  /** Removes a listener. */
  off<K extends keyof PortsEvents>(event: K, fn: PortsEvents[K]): void {
    const mine = this.#scoped.get(event);
    const filtered = mine?.get(fn);
    if (filtered !== undefined) {
      mine!.delete(fn);
      this.#emitter.off(event, filtered as PortsEvents[K]);
    } else this.#emitter.off(event, fn);
  }
}
