/**
 * etcd's Watch service over the JSON gateway: one watch is one chunked HTTP
 * answer to `POST /v3/watch`, a JSON object per line. Facts of etcd 3.4's
 * gateway this code relies on:
 *
 * - The first object says `"created": true`; its header's revision is the
 *   store's revision then (not what was delivered: a watch with a past start
 *   revision replays events after it).
 * - A PUT event has no `type` field (PUT is the default, so it is left out);
 *   a DELETE has `"type": "DELETE"`.
 * - A start revision that was compacted gives `created`, then
 *   `"canceled": true` with `compact_revision`, and the stream stays open: it
 *   is reported as the end "compacted", and this side closes the stream.
 * - With `progress_notify`, etcd sends an object with no events whose header
 *   revision says every event up to it was delivered (by default every 10
 *   minutes: `--experimental-watch-progress-notify-interval`).
 * - Node's fetch gives up on a body that is idle for 300 s, so a watch that
 *   hears nothing for `idleTimeout` (default 240 s) reopens itself from the
 *   last revision + 1, which loses nothing.
 *
 * @module
 */
import { type Header, header, int, type KeyValue, keyValue } from "./_codec.ts";
import type { Endpoints, Json } from "./_endpoints.ts";
import { EtcdError } from "./_errors.ts";
import { rangeJson, type RangeOptions } from "./kv.ts";
import type { Bytes } from "./_codec.ts";

/** Options of {@linkcode Watcher.watch}. */
export interface WatchOptions extends RangeOptions {
  /**
   * The first revision to report events of (0, the default: changes after
   * now). To catch up after a range read at revision R, watch from R + 1.
   */
  startRevision?: number;
  /** Ask etcd for progress notifications (default true). */
  progressNotify?: boolean;
  /** Report the previous pair with each event. */
  prevKv?: boolean;
  /**
   * Reopen the stream from the last revision + 1 after this many ms with
   * nothing received (default 240000: under Node's 300 s body timeout).
   */
  idleTimeout?: number;
}

/** One change. */
export interface WatchEvent {
  /** A put (create or update) or a delete. */
  type: "put" | "delete";
  /**
   * The pair after the change; for a delete only the key and the revision
   * of the delete (`modRevision`) are set.
   */
  kv: KeyValue;
  /** The pair before the change, when asked for with `prevKv`. */
  prevKv?: KeyValue;
}

/** What one message of the stream carried. */
export interface WatchBatch {
  /** The header. */
  header: Header;
  /** The changes, in revision order (empty for a progress notification). */
  events: WatchEvent[];
  /**
   * A progress notification: every change up to `header.revision` was
   * delivered.
   */
  progress: boolean;
}

/** Why a watch ended; `revision` is the last revision fully delivered. */
export type WatchEnd =
  | { reason: "closed"; revision: number }
  | {
    /**
     * The start revision was compacted away: read the range again (its
     * header revision R) and watch from R + 1.
     */
    reason: "compacted";
    compactRevision: number;
    revision: number;
  }
  | { reason: "canceled"; message: string; revision: number }
  | {
    /** The stream broke (a member died, etcd unreachable): resume from revision + 1. */
    reason: "broken";
    error: unknown;
    revision: number;
  };

/**
 * A running watch: iterate its batches; the iteration ends when the watch
 * does, and `ended` says why. Breaking out of the iteration closes it.
 */
export interface Watch extends AsyncIterable<WatchBatch>, AsyncDisposable {
  /**
   * Resolves `true` once etcd confirmed the watch (so later changes will be
   * seen), `false` if it ended first.
   */
  readonly ready: Promise<boolean>;
  /** The last revision of which every change was delivered (or queued). */
  readonly revision: number;
  /** How many times the stream was reopened after `idleTimeout`. */
  readonly reopens: number;
  /** Resolves when the watch ends, with why. */
  readonly ended: Promise<WatchEnd>;
  /** Ends the watch (reason "closed") and closes its stream. */
  close(): Promise<void>;
}

/** etcd's watch service. */
export interface Watcher {
  /**
   * Watches a key or a range of keys.
   *
   * @param key The key, or the start of the range (with `prefix` or `end`).
   * @param options Where to start, progress notifications, previous pairs.
   * @returns The running watch.
   * @throws {TypeError} When the key is empty without a range.
   */
  watch(key: Bytes, options?: WatchOptions): Watch;
}

/** The watch service over `endpoints`. */
export function createWatcher(endpoints: Endpoints): Watcher {
  return {
    watch(key, options = {}) {
      return new RunningWatch(endpoints, key, options);
    },
  };
}

const IDLE = Symbol("idle");

class RunningWatch implements Watch {
  readonly ready: Promise<boolean>;
  readonly ended: Promise<WatchEnd>;
  #endpoints: Endpoints;
  #request: Json;
  #start: number;
  #idleTimeout: number;
  #revision: number;
  #queue: WatchBatch[] = [];
  #wake: (() => void) | undefined;
  #end: WatchEnd | undefined;
  #ctl: AbortController | undefined;
  #closing = false;
  #reopens = 0;
  #setReady: (v: boolean) => void = () => {};
  #setEnded: (e: WatchEnd) => void = () => {};
  #run: Promise<void>;

  constructor(endpoints: Endpoints, key: Bytes, o: WatchOptions) {
    this.#endpoints = endpoints;
    this.#request = rangeJson(key, o);
    if (o.progressNotify ?? true) this.#request.progress_notify = true;
    if (o.prevKv) this.#request.prev_kv = true;
    const start = o.startRevision ?? 0;
    if (!Number.isSafeInteger(start) || start < 0) {
      throw new RangeError(`"startRevision" must be a revision, got ${start}`);
    }
    this.#idleTimeout = o.idleTimeout ?? 240_000;
    if (!(this.#idleTimeout > 0)) {
      throw new RangeError(
        `"idleTimeout" must be positive, got ${o.idleTimeout}`,
      );
    }
    this.#start = start;
    this.#revision = start > 0 ? start - 1 : 0;
    this.ready = new Promise((r) => this.#setReady = r);
    this.ended = new Promise((r) => this.#setEnded = r);
    this.#run = this.#loop();
  }

  get revision(): number {
    return this.#revision;
  }

  get reopens(): number {
    return this.#reopens;
  }

  async close(): Promise<void> {
    this.#closing = true;
    this.#ctl?.abort();
    await this.#run;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<WatchBatch> {
    try {
      while (true) {
        const next = this.#queue.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        if (this.#end !== undefined) return;
        await new Promise<void>((r) => this.#wake = r);
      }
    } finally {
      if (this.#end === undefined) await this.close();
    }
  }

  #push(batch: WatchBatch): void {
    this.#queue.push(batch);
    this.#wakeUp();
  }

  #wakeUp(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  #finish(end: WatchEnd): void {
    if (this.#end !== undefined) return;
    this.#end = end;
    this.#setReady(false);
    this.#setEnded(end);
    this.#wakeUp();
  }

  async #loop(): Promise<void> {
    let start = this.#start;
    while (true) {
      const ctl = new AbortController();
      this.#ctl = ctl;
      if (this.#closing) return this.#finish(this.#closedEnd());
      const body = { ...this.#request };
      if (start > 0) body.start_revision = start;
      let res: Response;
      try {
        res = await this.#endpoints.open("/v3/watch", {
          create_request: body,
        }, ctl.signal);
      } catch (error) {
        ctl.abort();
        return this.#finish(
          this.#closing ? this.#closedEnd() : {
            reason: "broken",
            error,
            revision: this.#revision,
          },
        );
      }
      const outcome = await this.#read(res, ctl, start);
      ctl.abort();
      if (outcome !== IDLE) return this.#finish(outcome);
      // Quiet for too long: reopen from where this one was.
      start = this.#revision + 1;
      this.#reopens++;
    }
  }

  #closedEnd(): WatchEnd {
    return { reason: "closed", revision: this.#revision };
  }

  /** Reads one stream to its end: why it ended, or IDLE to reopen it. */
  async #read(
    res: Response,
    ctl: AbortController,
    start: number,
  ): Promise<WatchEnd | typeof IDLE> {
    if (res.body === null) {
      return {
        reason: "broken",
        error: new EtcdError(
          "etcd answered /v3/watch with no body",
          0,
          res.status,
        ),
        revision: this.#revision,
      };
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let idle = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    // One timer per idle period, not one per chunk: when it fires, it
    // checks when the stream last spoke.
    let heard = Date.now();
    const arm = (ms: number) => {
      timer = setTimeout(() => {
        const left = heard + this.#idleTimeout - Date.now();
        if (left > 0) return arm(left);
        idle = true;
        ctl.abort();
      }, ms);
    };
    let buffer = "";
    try {
      arm(this.#idleTimeout);
      while (true) {
        const { done, value } = await reader.read();
        if (done) {
          return {
            reason: "broken",
            error: new EtcdError("etcd ended the watch stream", 0, res.status),
            revision: this.#revision,
          };
        }
        heard = Date.now();
        buffer += decoder.decode(value, { stream: true });
        let nl: number;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, nl).trim();
          buffer = buffer.slice(nl + 1);
          if (line === "") continue;
          const end = this.#message(JSON.parse(line) as Json, start);
          if (end !== undefined) return end;
        }
      }
    } catch (error) {
      if (this.#closing) return this.#closedEnd();
      if (idle) return IDLE;
      return { reason: "broken", error, revision: this.#revision };
    } finally {
      clearTimeout(timer);
      reader.cancel().catch(() => {});
    }
  }

  /** Handles one object of the stream; returns the end if it ended it. */
  #message(m: Json, start: number): WatchEnd | undefined {
    if (m.error !== undefined) {
      const e = m.error as {
        message?: unknown;
        grpc_code?: unknown;
        http_code?: unknown;
      };
      return {
        reason: "broken",
        error: new EtcdError(
          `etcd broke the watch: ${String(e.message ?? JSON.stringify(e))}`,
          typeof e.grpc_code === "number" ? e.grpc_code : 0,
          typeof e.http_code === "number" ? e.http_code : 0,
        ),
        revision: this.#revision,
      };
    }
    const r = (m.result ?? {}) as Json;
    const h = header(r.header);
    if (r.created === true) {
      if (start === 0 && this.#revision === 0) this.#revision = h.revision;
      this.#setReady(true);
    }
    if (r.canceled === true) {
      const compactRevision = int(r.compact_revision, "compact_revision");
      if (compactRevision > 0) {
        return {
          reason: "compacted",
          compactRevision,
          revision: this.#revision,
        };
      }
      return {
        reason: "canceled",
        message: typeof r.cancel_reason === "string" ? r.cancel_reason : "",
        revision: this.#revision,
      };
    }
    const events = Array.isArray(r.events) ? r.events.map(event) : [];
    if (events.length > 0) {
      this.#revision = Math.max(
        this.#revision,
        events[events.length - 1]!.kv.modRevision,
      );
      this.#push({ header: h, events, progress: false });
    } else if (r.created !== true) {
      this.#revision = Math.max(this.#revision, h.revision);
      this.#push({ header: h, events, progress: true });
    }
    return undefined;
  }
}

function event(v: unknown): WatchEvent {
  const e = v as Json;
  const out: WatchEvent = {
    type: e.type === "DELETE" ? "delete" : "put",
    kv: keyValue(e.kv, "event.kv"),
  };
  if (e.prev_kv !== undefined) {
    out.prevKv = keyValue(e.prev_kv, "event.prev_kv");
  }
  return out;
}
