/**
 * Registrations and their re-assertion: `service()`, `allocate()` and
 * `assume()` as the client keeps them, made ready or not ready, and asserted
 * again on whichever server the client reaches after a lost connection
 * (`allocate()`s end with theirs).
 *
 * @module
 */
import { ConnectionError, RegistryError, UnavailableError } from "../errors.ts";
import type {
  JsonValue,
  LostReason,
  Meta,
  ServiceRecord,
} from "../registry.ts";
import {
  checkMeta,
  checkPort,
  checkRole,
  handled,
  withCallback,
} from "./args.ts";
import type { Connection } from "./connection.ts";
import type { ServiceCallback } from "./ports.ts";
import type { Checked, Proposals } from "./proposals.ts";
import { type Body, NOOP, quiet } from "./requests.ts";

/** A registration as the client keeps it, to assert and re-assert. */
interface LocalService {
  readonly role: string;
  readonly meta: Meta | undefined;
  readonly persistent: boolean;
  port: number | undefined;
  rid: string | undefined;
  epoch: number;
  wantReady: boolean;
  visible: boolean;
  /**
   * Resolves the caller's promise with the port, until the port is known;
   * `service()`'s or `allocate()`'s callback, told the port then.
   */
  resolve: ((port: number) => void) | undefined;
  cb: ServiceCallback | undefined;
  onFail: (err: unknown) => void;
  /** Rejects the caller's promise if it is still pending; reports nothing. */
  cancel: (err: unknown) => void;
  /** Callers waiting for it to be visible: told once it is, or is lost. */
  readyWaiters: readonly ReadyWaiter[];
  /** Ports that could not be bound here (or were taken), not to be given. */
  exclude: readonly number[];
  /** Ready as soon as allocated (no `ready` argument in the callback). */
  auto: boolean;
  /** Made by `assume()`: re-asserted with `assume`, ready or not. */
  assumed: boolean;
  /** The record of the last (re-)assertion. */
  record: ServiceRecord | undefined;
  /** A `ready` or re-assertion the store could not take, to send again. */
  retry: ReturnType<typeof setTimeout> | undefined;
  /** How many times in a row the store could not take it. */
  failures: number;
}

/** A caller waiting for a registration to be visible. */
interface ReadyWaiter {
  shown: () => void;
  lost: (err: unknown) => void;
}

/** What a registration starts with: nobody waiting, no port excluded. */
const NONE: readonly never[] = Object.freeze([]);

/** Allocations whose port cannot be bound are retried this often at most. */
const MAX_PROBES = 32;

/**
 * A `ready` or a re-assertion that failed with `UNAVAILABLE` (the server's
 * store, etcd, could not take it) is sent again after this many ms, doubled
 * at each failure up to {@linkcode RETRY_MAX}, until it succeeds or the
 * registration is freed.
 */
const RETRY_FIRST = 100;
const RETRY_MAX = 2000;

/** This client's registrations. */
export class Registrations {
  #conn: Connection;
  #proposals: Proposals;
  #probe: boolean;
  #report: (err: unknown) => void;
  #onLost: (record: ServiceRecord, reason: LostReason) => void;
  #services = new Set<LocalService>();
  /**
   * Ids the server said this connection lost before the client knew them
   * (a `lost` event read while the answer that made it was being probed).
   */
  #lostIds = new Map<string, LostReason>();
  #lostEpoch = 0;

  constructor(
    conn: Connection,
    proposals: Proposals,
    probe: boolean,
    report: (err: unknown) => void,
    onLost: (record: ServiceRecord, reason: LostReason) => void,
  ) {
    this.#conn = conn;
    this.#proposals = proposals;
    this.#probe = probe;
    this.#report = report;
    this.#onLost = onLost;
  }

  /**
   * The server says the registration `record` of this connection was taken
   * away (`lost` event): it is forgotten, not asserted again; whoever waits
   * for it gets a `LOST` error, and the client's `lost` event fires.
   */
  taken(record: ServiceRecord, reason: LostReason): void {
    const epoch = this.#conn.epoch;
    for (const svc of this.#services) {
      if (svc.rid !== record.id || svc.epoch !== epoch) continue;
      this.#forget(svc, record, reason);
      return;
    }
    // its answer may still be on the way (kept only while one is awaited)
    let awaited = false;
    for (const svc of this.#services) awaited ||= svc.rid === undefined;
    if (!awaited) return;
    if (this.#lostEpoch !== epoch) this.#lostIds.clear();
    this.#lostEpoch = epoch;
    this.#lostIds.set(record.id, reason);
  }

  #forget(svc: LocalService, record: ServiceRecord, reason: LostReason): void {
    this.#fail(
      svc,
      new RegistryError(
        "LOST",
        `The registration of "${svc.role}" on port ${record.port} was ${
          reason === "assume"
            ? "taken by another client's assume of its port"
            : "freed by an operator"
        }`,
      ),
    );
    this.#onLost(record, reason);
  }

  /**
   * `svc` is gone from the server: forgotten, and whoever waits for it (a
   * `ready()`, a `service()` or `allocate()` not yet settled) gets `err`.
   */
  #fail(svc: LocalService, err: unknown): void {
    this.#services.delete(svc);
    this.#stopRetry(svc);
    svc.visible = false;
    const waiters = svc.readyWaiters;
    svc.readyWaiters = NONE;
    for (const w of waiters) w.lost(err);
    svc.cancel(err);
  }

  /** The connection is up: asserts every registration on it. */
  reassert(): void {
    for (const svc of this.#services) this.#assert(svc);
  }

  /**
   * The connection is down: nothing is visible; `allocate()`s end with it
   * (their promises reject if not yet visible).
   */
  lost(): void {
    for (const svc of this.#services) {
      svc.visible = false;
      this.#stopRetry(svc); // the re-assertion after the reconnect does it
      if (!svc.persistent && svc.port !== undefined) {
        this.#services.delete(svc);
        const ended = new ConnectionError(
          `The registration of "${svc.role}" on port ${svc.port} ended with the connection`,
        );
        svc.cancel(ended); // allocate() not yet visible: its promise rejects
        svc.onFail(ended);
      }
    }
  }

  /** The client is closed (or failed): every pending caller gets `err`. */
  cancelAll(err: unknown): void {
    for (const svc of this.#services) {
      this.#stopRetry(svc);
      svc.cancel(err);
    }
    this.#services.clear();
  }

  /**
   * Sends what a local registration needs now; nothing while disconnected.
   * A new one with the probe on asks for a checked proposal by number,
   * once there is one (see {@linkcode Proposals.claim}).
   */
  #assert(svc: LocalService): void {
    if (!this.#conn.connected) return;
    if (svc.port !== undefined || !this.#probe) {
      this.#send(svc, undefined);
      return;
    }
    this.#proposals.claim(svc.exclude, svc, this.#checked);
  }

  /** A new registration's check: sent with it, if it still needs it. */
  #checked = (svc: LocalService, checked: Checked): boolean => {
    if (
      !this.#services.has(svc) || svc.port !== undefined ||
      !this.#conn.connected
    ) return false; // freed meanwhile, or the reconnect asserts it
    this.#send(svc, checked);
    return true;
  };

  /**
   * Sends `svc`'s allocation or re-assertion; a new one `checked` asks for
   * a checked port by number, or passes the ports in use over, and is not
   * probed afterwards.
   */
  #send(svc: LocalService, checked: Checked): void {
    const epoch = this.#conn.epoch;
    const probe = this.#probe;
    const fresh = svc.port === undefined;
    const hint = typeof checked === "number" ? checked : undefined;
    // Without a probe still to make, an automatic ready rides along with the
    // allocation.
    const now = svc.auto && (!probe || checked !== undefined);
    const body: {
      op: "allocate" | "assume";
      role: string;
      port?: number;
      meta?: Meta;
      exclude?: number[];
      ready?: boolean;
    } = { op: "allocate", role: svc.role };
    if (hint !== undefined) body.port = hint;
    else if (!fresh) {
      body.port = svc.port!;
      if (svc.wantReady) body.op = "assume";
      else if (svc.assumed) {
        body.op = "assume"; // kept, but not ready
        body.ready = false;
      }
    }
    if (svc.meta !== undefined) body.meta = svc.meta;
    if (fresh && hint === undefined && svc.exclude.length > 0) {
      body.exclude = [...svc.exclude];
    }
    if (now && body.op === "allocate") body.ready = true;
    this.#conn.requests.transmit({
      body: body as Body,
      retry: false,
      onDrop: NOOP,
      avoid: Array.isArray(checked) ? checked : undefined,
      resolve: (result) => {
        if (
          fresh && probe && checked === undefined && this.#services.has(svc)
        ) {
          // allocated unchecked: checked now, then taken or given back
          void this.#proposals.canBind((result as { port: number }).port)
            .then((ok) => {
              if (ok) return this.#answered(svc, epoch, body, result);
              if (this.#conn.epoch !== epoch || !this.#conn.connected) return; // re-asserted
              this.#probeFailed(svc, result as unknown as ServiceRecord);
            });
          return;
        }
        this.#answered(svc, epoch, body, result);
      },
      reject: (err) => {
        if (
          hint !== undefined && err instanceof RegistryError &&
          err.code === "PORT_TAKEN" && this.#services.has(svc)
        ) {
          // taken meanwhile by another client on this host: the usual way
          svc.exclude = [...svc.exclude, hint];
          if (this.#conn.connected) this.#send(svc, undefined);
          return;
        }
        if (
          err instanceof UnavailableError && svc.record !== undefined &&
          this.#services.has(svc)
        ) {
          // A re-assertion the store could not take: kept, and sent again
          // (a reconnect meanwhile sends it anyway).
          this.#later(svc, err, epoch, () => this.#assert(svc));
          return;
        }
        this.#services.delete(svc);
        if (this.#conn.closed) svc.cancel(err);
        else svc.onFail(err);
      },
    });
  }

  /** A new registration's or re-assertion's answer: the record it got. */
  #answered(
    svc: LocalService,
    epoch: number,
    body: { op: string; ready?: boolean },
    result: JsonValue,
  ): void {
    // the connection was lost while probing: reconnecting asserts it again
    if (this.#conn.epoch !== epoch || !this.#conn.connected) return;
    if (!this.#services.has(svc)) {
      // freed while the request was in flight
      const rid = (result as { id: string }).id;
      this.#conn.requests.transmit(quiet({ op: "free", rid }));
      return;
    }
    const record = result as unknown as ServiceRecord;
    svc.failures = 0;
    svc.rid = record.id;
    svc.epoch = epoch;
    svc.record = record;
    const gone = this.#lostEpoch === epoch
      ? this.#lostIds.get(record.id)
      : undefined;
    if (gone !== undefined) {
      // taken away while this answer was being probed
      this.#lostIds.delete(record.id);
      this.#forget(svc, record, gone);
      return;
    }
    const shown = body.op === "assume"
      ? body.ready !== false
      : body.ready === true;
    if (shown) {
      if (svc.auto || svc.wantReady) {
        svc.wantReady = true;
        this.#visible(svc);
      } else this.#sendUnready(svc); // unready() was called meanwhile
    } else if (svc.wantReady) {
      this.#sendReady(svc);
    }
    if (svc.port === undefined) {
      svc.port = record.port;
      this.#portKnown(svc, record.port);
    }
  }

  /**
   * A new registration got its port: its callback is told, then its
   * promise resolves (an automatic one's once it is visible).
   */
  #portKnown(svc: LocalService, port: number): void {
    const { resolve, cb, cancel: reject } = svc;
    if (resolve === undefined) return;
    svc.resolve = undefined;
    svc.cb = undefined;
    svc.onFail = this.#report;
    const auto = cb === undefined || cb.length < 2;
    try {
      if (cb !== undefined) {
        if (auto) (cb as (port: number) => void)(port);
        else cb(port, () => this.#makeReady(svc));
      }
    } catch (err) {
      this.#report(err);
    }
    if (!auto || svc.visible) resolve(port);
    else this.#makeReady(svc).then(() => resolve(port), reject); // LOST meanwhile
  }

  /** Gives back a port that cannot be bound and asks for another. */
  #probeFailed(svc: LocalService, record: ServiceRecord): void {
    this.#conn.requests.transmit(quiet({ op: "free", rid: record.id }));
    svc.exclude = [...svc.exclude, record.port];
    if (svc.exclude.length >= MAX_PROBES) {
      this.#services.delete(svc);
      svc.onFail(
        new RegistryError(
          "RANGE_EXHAUSTED",
          `Cannot allocate a port for "${svc.role}": ${svc.exclude.length} ports in a row were taken on this machine (${
            svc.exclude.slice(0, 5).join(", ")
          }, …)`,
        ),
      );
      return;
    }
    this.#assert(svc);
  }

  #visible(svc: LocalService): void {
    if (!svc.wantReady) return; // unready() was called meanwhile
    svc.visible = true;
    const waiters = svc.readyWaiters;
    svc.readyWaiters = NONE;
    for (const w of waiters) w.shown();
  }

  #sendReady(svc: LocalService): void {
    if (!this.#current(svc) || !svc.wantReady || svc.visible) return;
    this.#conn.requests.transmit({
      body: { op: "ready", rid: svc.rid! },
      retry: false,
      onDrop: () => {},
      resolve: () => {
        svc.failures = 0;
        this.#visible(svc);
      },
      reject: (err) => {
        if (err instanceof UnavailableError && this.#services.has(svc)) {
          // etcd could not take it now: the service() waiting for it is
          // still waiting, so ask again until it succeeds or is freed.
          this.#later(svc, err, svc.epoch, () => this.#sendReady(svc));
          return;
        }
        if (
          err instanceof RegistryError && err.code === "NOT_FOUND" &&
          this.#current(svc)
        ) {
          // gone from the server (a server that sends no `lost` events):
          // whoever waits for it is told, rather than left waiting
          this.#fail(svc, err);
        }
        this.#report(err);
      },
    });
  }

  /**
   * Reports the first of a run of `UNAVAILABLE` failures and runs `again`
   * after the backoff, if `svc` is still held on the same connection.
   */
  #later(
    svc: LocalService,
    err: unknown,
    epoch: number,
    again: () => void,
  ): void {
    if (svc.failures++ === 0) this.#report(err);
    const ms = Math.min(RETRY_MAX, RETRY_FIRST * 2 ** (svc.failures - 1));
    this.#stopRetry(svc);
    svc.retry = setTimeout(() => {
      svc.retry = undefined;
      if (
        !this.#services.has(svc) || !this.#conn.connected ||
        this.#conn.epoch !== epoch
      ) return; // freed, or the reconnect asserts it
      again();
    }, ms);
  }

  #stopRetry(svc: LocalService): void {
    if (svc.retry === undefined) return;
    clearTimeout(svc.retry);
    svc.retry = undefined;
  }

  /** Hides a registration; done at once when it is not on the server now. */
  #sendUnready(svc: LocalService): Promise<void> {
    if (!this.#current(svc)) return Promise.resolve();
    return new Promise((resolve) => {
      this.#conn.requests.transmit({
        body: { op: "unready", rid: svc.rid! },
        retry: false,
        onDrop: resolve, // the re-assertion keeps it hidden
        resolve: () => resolve(),
        reject: (err) => {
          this.#report(err);
          resolve();
        },
      });
    });
  }

  /** Whether the server holds `svc` on the connection that is up now. */
  #current(svc: LocalService): boolean {
    return this.#conn.connected && svc.rid !== undefined &&
      svc.epoch === this.#conn.epoch;
  }

  /** Asks for `svc` to be visible; resolves once it is. */
  #makeReady(svc: LocalService): Promise<void> {
    if (svc.visible) return Promise.resolve();
    const done = new Promise<void>((shown, lost) =>
      svc.readyWaiters = [...svc.readyWaiters, { shown, lost }]
    );
    if (!svc.wantReady) {
      svc.wantReady = true;
      this.#sendReady(svc);
    }
    return done;
  }

  /** The local registration on `port`. */
  #holding(port: number, what: string): LocalService {
    checkPort(port);
    for (const svc of this.#services) if (svc.port === port) return svc;
    throw new RegistryError(
      "NOT_FOUND",
      `Cannot mark port ${port} ${what}: this client holds no registration on it`,
    );
  }

  ready(port: number): Promise<void> {
    try {
      return this.#makeReady(this.#holding(port, "ready"));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  unready(port: number): Promise<void> {
    let svc: LocalService;
    try {
      svc = this.#holding(port, "not ready");
    } catch (err) {
      return Promise.reject(err);
    }
    svc.auto = false;
    svc.wantReady = false;
    svc.visible = false;
    return this.#sendUnready(svc);
  }

  #register(
    persistent: boolean,
    role: string,
    metaOrCb: Meta | ServiceCallback | undefined,
    maybeCb: ServiceCallback | undefined,
  ): Promise<number> {
    const cb = typeof metaOrCb === "function" ? metaOrCb : maybeCb;
    const meta = typeof metaOrCb === "function" ? undefined : metaOrCb;
    const promise = new Promise<number>((resolve, reject) => {
      checkRole(role);
      checkMeta(meta);
      if (cb !== undefined && typeof cb !== "function") {
        throw new TypeError("The callback must be a function");
      }
      if (this.#conn.closed) {
        throw new ConnectionError("The client is closed", {}, "CLOSED");
      }
      const auto = cb === undefined || cb.length < 2;
      const svc: LocalService = {
        role,
        meta,
        persistent,
        port: undefined,
        rid: undefined,
        epoch: 0,
        wantReady: false,
        visible: false,
        readyWaiters: NONE,
        onFail: reject,
        cancel: reject,
        resolve,
        cb,
        exclude: NONE,
        auto,
        assumed: false,
        record: undefined,
        retry: undefined,
        failures: 0,
      };
      this.#proposals.wanted();
      this.#services.add(svc);
      this.#assert(svc);
    });
    return cb === undefined ? promise : handled(promise, this.#report);
  }

  service(
    role: string,
    metaOrCb?: Meta | ServiceCallback,
    cb?: ServiceCallback,
  ): Promise<number> {
    return this.#register(true, role, metaOrCb, cb);
  }

  allocate(
    role: string,
    metaOrCb?: Meta | ServiceCallback,
    cb?: ServiceCallback,
  ): Promise<number> {
    return this.#register(false, role, metaOrCb, cb);
  }

  assume(
    role: string,
    portOrMeta: number | (Meta & { port: number }),
    cb?: (record: ServiceRecord) => void,
  ): Promise<ServiceRecord> {
    const promise = new Promise<ServiceRecord>((resolve, reject) => {
      checkRole(role);
      let port: number;
      let meta: Meta | undefined;
      if (typeof portOrMeta === "number") {
        port = portOrMeta;
      } else {
        checkMeta(portOrMeta);
        const { port: p, ...rest } = portOrMeta as Meta;
        port = p as number;
        meta = rest;
      }
      checkPort(port);
      if (this.#conn.closed) {
        throw new ConnectionError("The client is closed", {}, "CLOSED");
      }
      for (const old of this.#services) {
        if (old.port !== port) continue;
        this.#services.delete(old);
        this.#stopRetry(old);
      }
      const svc: LocalService = {
        role,
        meta,
        persistent: true,
        port,
        rid: undefined,
        epoch: 0,
        wantReady: true,
        visible: false,
        readyWaiters: [{ shown: () => resolve(svc.record!), lost: reject }],
        onFail: reject,
        cancel: reject,
        resolve: undefined,
        cb: undefined,
        exclude: NONE,
        auto: false,
        assumed: true,
        record: undefined,
        retry: undefined,
        failures: 0,
      };
      this.#services.add(svc);
      this.#assert(svc);
    });
    return withCallback(promise, cb, this.#report);
  }

  free(target: number | ServiceRecord, cb?: () => void): Promise<void> {
    const promise = (async () => {
      let svc: LocalService | undefined;
      if (typeof target === "number") {
        checkPort(target);
        for (const s of this.#services) if (s.port === target) svc = s;
      } else if (typeof target === "object" && target !== null) {
        for (const s of this.#services) if (s.rid === target.id) svc = s;
      } else {
        throw new TypeError("free() takes a port number or a record");
      }
      if (svc !== undefined) {
        this.#services.delete(svc);
        this.#stopRetry(svc);
        svc.cancel(new ConnectionError(`"${svc.role}" was freed`));
        if (
          svc.rid === undefined || svc.epoch !== this.#conn.epoch ||
          !this.#conn.connected
        ) return; // the server forgets it with the lost connection
        // the server forgot it with the connection it was made on
        await this.#conn.requests.request({ op: "free", rid: svc.rid }, false)
          .catch(
            (err) => {
              if (!(err instanceof ConnectionError)) throw err;
            },
          );
        return;
      }
      const body: Body = typeof target === "number"
        ? { op: "free", port: target }
        : { op: "free", rid: String(target.id) };
      await this.#conn.requests.request(body, false);
    })().then(() => cb?.());
    return cb === undefined ? promise : handled(promise, this.#report);
  }
}
