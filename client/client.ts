/**
 * The client: {@linkcode Ports} made of its parts — the connection (with its
 * server pool and request pipeline), registrations, port proposals and event
 * subscriptions — and the calls that are plain requests (`query`, `get`,
 * `evict`).
 *
 * @module
 */
import { Emitter } from "../_emitter.ts";
import { AbortError, ConnectionError, TimeoutError } from "../errors.ts";
import { type Meta, parsePattern, type ServiceRecord } from "../registry.ts";
import { defaultTransport, type Endpoint } from "../transport.ts";
import { checkPort, positive, withCallback } from "./args.ts";
import { Connection } from "./connection.ts";
import { Subscriptions } from "./events.ts";
import type {
  ConnectOptions,
  EventScope,
  GetOptions,
  Ports,
  PortsEvents,
  QueryOptions,
  ServiceCallback,
} from "./ports.ts";
import { DEFAULT_PROPOSALS, Proposals } from "./proposals.ts";
import { Registrations } from "./registrations.ts";
import type { Pending } from "./requests.ts";
import { parseAddress } from "./servers.ts";

class Client implements Ports {
  #emitter = new Emitter<PortsEvents>((err) => this.#report(err));
  #conn: Connection;
  #proposals: Proposals;
  #registrations: Registrations;
  #subscriptions: Subscriptions;

  constructor(endpoints: readonly Endpoint[], opts: ConnectOptions) {
    if (opts.shuffle !== undefined && typeof opts.shuffle !== "boolean") {
      throw new TypeError(`Option "shuffle" must be a boolean`);
    }
    const transport = opts.transport ?? defaultTransport();
    if (opts.secret !== undefined && typeof opts.secret !== "string") {
      throw new TypeError(`Option "secret" must be a string`);
    }
    if (opts.env !== undefined && typeof opts.env !== "string") {
      throw new TypeError(`Option "env" must be a string`);
    }
    const report = (err: unknown) => this.#report(err);
    this.#conn = new Connection(endpoints, opts, transport, {
      event: (msg) => this.#subscriptions.event(msg),
      lost: (msg) => this.#registrations.taken(msg.record, msg.reason),
      up: () => {
        // subscribed first: what a connect listener asks is answered after it
        this.#subscriptions.resubscribe();
        this.#emitter.emit("connect");
        this.#registrations.reassert();
        this.#conn.requests.flush();
        this.#proposals.peek();
      },
      down: () => this.#registrations.lost(),
      failed: (err) => {
        this.#conn.requests.rejectAll(err);
        this.#registrations.cancelAll(err);
        this.#report(err);
      },
      disconnect: (err) => this.#emitter.emit("disconnect", err),
      report,
    });
    const probe = opts.probe !== false;
    const kept = opts.proposals ?? DEFAULT_PROPOSALS;
    if (typeof kept !== "number") {
      throw new TypeError(
        `Option "proposals" must be a number, got ${typeof kept}`,
      );
    }
    if (!Number.isSafeInteger(kept) || kept < 0) {
      throw new RangeError(
        `Option "proposals" must be a whole number of ports, 0 or more, got ${
          String(opts.proposals)
        }`,
      );
    }
    this.#proposals = new Proposals(this.#conn, transport, probe, kept);
    this.#registrations = new Registrations(
      this.#conn,
      this.#proposals,
      probe,
      report,
      (record, reason) => this.#emitter.emit("lost", record, reason),
    );
    this.#subscriptions = new Subscriptions(
      this.#conn,
      this.#emitter,
      opts.env ?? "",
      report,
    );
    this.#conn.start();
  }

  get connected(): boolean {
    return this.#conn.connected;
  }

  get host(): string | undefined {
    return this.#conn.host;
  }

  #report(err: unknown): void {
    if (this.#emitter.count("error") > 0) this.#emitter.emit("error", err);
  }

  async close(): Promise<void> {
    if (this.#conn.close()) {
      const closed = new ConnectionError("The client was closed", {}, "CLOSED");
      this.#conn.requests.rejectAll(closed);
      this.#registrations.cancelAll(closed);
    }
    await this.#conn.finished;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  service(
    role: string,
    metaOrCb?: Meta | ServiceCallback,
    cb?: ServiceCallback,
  ): Promise<number> {
    return this.#registrations.service(role, metaOrCb, cb);
  }

  allocate(
    role: string,
    metaOrCb?: Meta | ServiceCallback,
    cb?: ServiceCallback,
  ): Promise<number> {
    return this.#registrations.allocate(role, metaOrCb, cb);
  }

  assume(
    role: string,
    portOrMeta: number | (Meta & { port: number }),
    cb?: (record: ServiceRecord) => void,
  ): Promise<ServiceRecord> {
    return this.#registrations.assume(role, portOrMeta, cb);
  }

  ready(port: number): Promise<void> {
    return this.#registrations.ready(port);
  }

  unready(port: number): Promise<void> {
    return this.#registrations.unready(port);
  }

  free(target: number | ServiceRecord, cb?: () => void): Promise<void> {
    return this.#registrations.free(target, cb);
  }

  evict(host: string, port: number): Promise<ServiceRecord> {
    try {
      if (typeof host !== "string" || host === "") {
        throw new TypeError("evict() takes a host name or address");
      }
      checkPort(port);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#conn.requests.request(
      { op: "evict", host, port },
      false,
    ) as Promise<
      never
    >;
  }

  query(
    a?: string | QueryOptions | ((records: ServiceRecord[]) => void),
    b?: string | ((records: ServiceRecord[]) => void),
    c?: (records: ServiceRecord[]) => void,
  ): Promise<ServiceRecord[]> {
    const args = [a, b, c].filter((x) => x !== undefined);
    const cb = typeof args[args.length - 1] === "function"
      ? args.pop() as (records: ServiceRecord[]) => void
      : undefined;
    const promise = new Promise<ServiceRecord[]>((resolve, reject) => {
      let opts: QueryOptions;
      if (args.length === 1 && typeof args[0] === "object" && args[0]) {
        opts = args[0] as QueryOptions;
      } else if (args.every((x) => typeof x === "string")) {
        opts = args.length === 2
          ? { env: args[0] as string, pattern: args[1] as string }
          : args.length === 1
          ? { pattern: args[0] as string }
          : {};
      } else {
        throw new TypeError(
          "query() takes ([env,] [pattern][, cb]) or ({ pattern, env, all }[, cb])",
        );
      }
      const { env, pattern, all, since } = opts;
      if (pattern !== undefined) parsePattern(pattern);
      const body: {
        op: "query";
        pattern?: string;
        env?: string;
        all?: boolean;
        since?: boolean;
      } = { op: "query" };
      if (pattern !== undefined) body.pattern = pattern;
      if (env !== undefined) body.env = env;
      if (all === true) body.all = true;
      if (since === true) body.since = true;
      this.#conn.requests.request(body).then(
        (r) => resolve(r as unknown as ServiceRecord[]),
        reject,
      );
    });
    return withCallback(promise, cb, this.#report);
  }

  get(
    pattern: string,
    optsOrCb?: GetOptions | ((records: ServiceRecord[]) => void),
    maybeCb?: (records: ServiceRecord[]) => void,
  ): Promise<ServiceRecord[]> {
    const cb = typeof optsOrCb === "function" ? optsOrCb : maybeCb;
    const opts = typeof optsOrCb === "object" ? optsOrCb : {};
    const promise = new Promise<ServiceRecord[]>((resolve, reject) => {
      if (typeof pattern !== "string") {
        throw new TypeError("get() takes a pattern string");
      }
      parsePattern(pattern);
      const { signal, timeout } = opts;
      if (timeout !== undefined) positive("timeout", timeout, 0);
      if (signal?.aborted) throw aborted(pattern, signal.reason);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const p: Pending = {
        body: { op: "get", pattern },
        retry: true,
        resolve: (r) => {
          cleanup();
          resolve(r as unknown as ServiceRecord[]);
        },
        reject: (err) => {
          cleanup();
          reject(err);
        },
      };
      const abort = (reason: unknown) => {
        cleanup();
        this.#conn.requests.withdraw(p);
        reject(reason);
      };
      const onAbort = () => abort(aborted(pattern, signal!.reason));
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      if (timeout !== undefined) {
        timer = setTimeout(
          () =>
            abort(
              new TimeoutError(
                `get("${pattern}") found no match within ${timeout} ms`,
              ),
            ),
          timeout,
        );
      }
      if (this.#conn.closed) {
        p.reject(new ConnectionError("The client is closed", {}, "CLOSED"));
      } else this.#conn.requests.send(p);
    });
    return withCallback(promise, cb, this.#report);
  }

  on<K extends keyof PortsEvents>(
    event: K,
    fn: PortsEvents[K],
    scope?: EventScope,
  ): this {
    this.#subscriptions.on(event, fn, scope);
    return this;
  }

  off<K extends keyof PortsEvents>(event: K, fn: PortsEvents[K]): this {
    this.#subscriptions.off(event, fn);
    return this;
  }
}

/** What an aborted `get()` rejects with: the signal's reason as the cause. */
function aborted(pattern: string, reason: unknown): Error {
  const timedOut = reason instanceof Error && reason.name === "TimeoutError";
  const text = `get("${pattern}") was ${
    timedOut ? "timed out" : "aborted"
  } by its signal`;
  return timedOut
    ? new TimeoutError(text, { cause: reason })
    : new AbortError(text, { cause: reason });
}

/**
 * Connects to a seaport server. Calls made before the connection is up are
 * queued; the client reconnects by itself until `close()`.
 */
export function connectWith(
  env: string | undefined,
  args: readonly unknown[],
): Ports {
  const { endpoints, options } = parseAddress(args);
  return new Client(
    endpoints,
    env === undefined ? options : { ...options, env },
  );
}
