/**
 * The wire protocol: newline-delimited JSON with a maximum line length, the
 * message types, and validation that turns a line into a checked message or a
 * precise error. See PROTOCOL.md.
 *
 * @module
 */
import type { WireError } from "./errors.ts";
import type { JsonValue, LostReason, Meta, ServiceRecord } from "./registry.ts";

/** The protocol version spoken by this implementation. */
export const PROTOCOL_VERSION = 1;

/** The default maximum length of one line, in bytes. */
export const DEFAULT_MAX_LINE_BYTES = 64 * 1024;

/** Request operations a client may send. */
export type Op = Request["op"];

interface Base {
  /** Chosen by the client; echoed in the reply. */
  readonly id: number;
}

/** `hello`: the first message, naming the protocol version and environment. */
export interface HelloRequest extends Base {
  readonly op: "hello";
  readonly v: number;
  readonly env?: string;
  readonly advertise?: string;
  /**
   * The client's session id, the same across its reconnects and servers
   * (1 to 128 visible ASCII characters): a server of a registry kept in etcd takes
   * over the session's registrations when it comes back through it.
   */
  readonly session?: string;
  /**
   * `true`: tell this connection, with a `lost` event, when another's change
   * takes away a registration it holds.
   */
  readonly lost?: boolean;
}
/** `auth`: the HMAC of the server's challenge. */
export interface AuthRequest extends Base {
  readonly op: "auth";
  readonly mac: string;
}
/** `allocate`: reserve a port for a role. */
export interface AllocateRequest extends Base {
  readonly op: "allocate";
  readonly role: string;
  readonly meta?: Meta;
  readonly port?: number;
  readonly exclude?: number[];
  /** Make it visible at once, as `ready` would. */
  readonly ready?: boolean;
}
/**
 * `ready`: make a reservation visible; `unready`: hide a visible one again,
 * keeping its port reserved.
 */
export interface ReadyRequest extends Base {
  readonly op: "ready" | "unready";
  readonly rid: string;
}
/** `assume`: register a port the service already listens on. */
export interface AssumeRequest extends Base {
  readonly op: "assume";
  readonly role: string;
  readonly port: number;
  readonly meta?: Meta;
  /** `false`: registered but not ready until `ready`. Default: `true`. */
  readonly ready?: boolean;
}
/** `free`: give a registration back, by id or by port. */
export interface FreeRequest extends Base {
  readonly op: "free";
  readonly rid?: string;
  readonly port?: number;
}
/** `query`: the matching registrations now. */
export interface QueryRequest extends Base {
  readonly op: "query";
  readonly pattern?: string;
  readonly env?: string;
  readonly all?: boolean;
  /** Add `since` (ms since the epoch it was last made visible) to each record. */
  readonly since?: boolean;
}
/** `get`: the matching registrations, answered once at least one exists. */
export interface GetRequest extends Base {
  readonly op: "get";
  readonly pattern: string;
  readonly env?: string;
}
/** `evict`: free whatever registration holds a port on a host (operators). */
export interface EvictRequest extends Base {
  readonly op: "evict";
  readonly host: string;
  readonly port: number;
}
/** `cancel`: stop waiting on an earlier `get`. */
export interface CancelRequest extends Base {
  readonly op: "cancel";
  readonly target: number;
}
/**
 * `subscribe`: receive the events of this connection's environment, of `env`,
 * or of every environment with `all`; with `snapshot`, the reply is every
 * visible registration in that scope, and the events that follow it are the
 * changes after it. `unsubscribe`: stop.
 */
export interface SubscribeRequest extends Base {
  readonly op: "subscribe" | "unsubscribe";
  readonly env?: string;
  readonly all?: boolean;
  readonly snapshot?: boolean;
}
/** An operation a `batch` may carry (without an `id` of its own). */
export type BatchItem =
  | Omit<AllocateRequest, "id">
  | Omit<ReadyRequest, "id">
  | Omit<AssumeRequest, "id">
  | Omit<FreeRequest, "id">;
/**
 * `batch`: several registration changes in one request, applied in order as
 * one change and answered with one reply: an array with, for each item, its
 * `{ result }` or `{ error }` (an item that fails fails alone). A server
 * announces it in its hello reply (`batch`: the most items it takes).
 */
export interface BatchRequest extends Base {
  readonly op: "batch";
  /** The items, each checked on its own: an invalid one is its error. */
  readonly ops: readonly (BatchItem | { readonly error: WireError })[];
  /**
   * Ports that no `allocate` item without a `port` is given (besides its own
   * `exclude`): the ports a client found in use on its host.
   */
  readonly exclude?: readonly number[];
}
/** `ping`: a liveness check. */
export interface PingRequest extends Base {
  readonly op: "ping";
}
/**
 * `peek`: the port `allocate` would pick next on this connection's host, or
 * with `count` (1 to {@linkcode MAX_PEEK}) that many distinct ports at most.
 */
export interface PeekRequest extends Base {
  readonly op: "peek";
  readonly count?: number;
}

/** Every message a client may send. */
export type Request =
  | HelloRequest
  | AuthRequest
  | AllocateRequest
  | ReadyRequest
  | AssumeRequest
  | FreeRequest
  | EvictRequest
  | QueryRequest
  | GetRequest
  | CancelRequest
  | SubscribeRequest
  | PingRequest
  | PeekRequest
  | BatchRequest;

/** A reply to a request. */
export type Reply =
  | { readonly id: number; readonly result: JsonValue }
  | { readonly id: number | null; readonly error: WireError };

/** An event pushed to subscribed clients. */
export interface EventMessage {
  readonly ev: "allocate" | "assume" | "free";
  readonly record: ServiceRecord;
  /** On `free`: hidden as not ready, its port still reserved. */
  readonly unready?: true;
}

/**
 * Sent to a connection that asked for it in its hello: a registration it
 * held was taken away by another's change, an `assume` of its port or an
 * operator's eviction. It is gone; the client does not assert it again.
 */
export interface LostMessage {
  readonly ev: "lost";
  readonly record: ServiceRecord;
  readonly reason: LostReason;
}

/** Every message a server may send. */
export type ServerMessage = Reply | EventMessage | LostMessage;

/** A request that failed validation: the error to send back. */
export interface Invalid {
  /** The request id, when one could be read. */
  readonly id: number | null;
  /** The error. */
  readonly error: WireError;
}

/** Every operation a client may send. */
export const OPERATIONS: readonly Op[] = [
  "hello",
  "auth",
  "allocate",
  "ready",
  "unready",
  "assume",
  "free",
  "evict",
  "query",
  "get",
  "cancel",
  "subscribe",
  "unsubscribe",
  "ping",
  "peek",
  "batch",
];

/** The most items one `batch` may carry. */
export const MAX_BATCH = 1024;

/** The most ports one `peek` may ask to be proposed (its `count`). */
export const MAX_PEEK = 1024;

/** The operations a `batch` may carry. */
const BATCHABLE: ReadonlySet<string> = new Set([
  "allocate",
  "ready",
  "unready",
  "assume",
  "free",
]);

const OPS: ReadonlySet<string> = new Set(OPERATIONS);

const FORBIDDEN_KEYS: ReadonlySet<string> = new Set([
  "__proto__",
  "constructor",
  "prototype",
]);

const MAX_META_DEPTH = 8;
/** The most ports an `exclude` may list. */
export const MAX_EXCLUDE = 1024;

class Bad extends Error {}

/** The `exclude` of `o`: at most {@linkcode MAX_EXCLUDE} ports. */
function exclude(o: { [key: string]: unknown }): number[] {
  const ex = o.exclude;
  if (!Array.isArray(ex) || ex.length > MAX_EXCLUDE) {
    throw new Bad(`"exclude" must be an array of at most ${MAX_EXCLUDE} ports`);
  }
  for (const p of ex) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) {
      throw new Bad(
        `"exclude" must list integer ports from 1 to 65535, got ${
          JSON.stringify(p)
        }`,
      );
    }
  }
  return ex as number[];
}

function isObject(v: unknown): v is { [key: string]: unknown } {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function str(o: { [key: string]: unknown }, k: string, max = 1024): string {
  const v = o[k];
  if (typeof v !== "string") throw new Bad(`"${k}" must be a string`);
  if (v.length > max) throw new Bad(`"${k}" is longer than ${max} characters`);
  return v;
}

function optStr(
  o: { [key: string]: unknown },
  k: string,
): string | undefined {
  return o[k] === undefined ? undefined : str(o, k);
}

function optBool(
  o: { [key: string]: unknown },
  k: string,
): boolean | undefined {
  const v = o[k];
  if (v !== undefined && typeof v !== "boolean") {
    throw new Bad(`"${k}" must be a boolean`);
  }
  return v;
}

/** The optional `env` and `all` of a query or a subscription. */
function scope(
  o: { [key: string]: unknown },
  r: { env?: string; all?: boolean },
): void {
  const env = optStr(o, "env");
  if (env !== undefined) r.env = env;
  const all = optBool(o, "all");
  if (all !== undefined) r.all = all;
}

function port(o: { [key: string]: unknown }, k: string): number {
  const v = o[k];
  if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 65535) {
    throw new Bad(`"${k}" must be an integer port from 1 to 65535`);
  }
  return v as number;
}

function checkJson(v: unknown, depth: number, path: string): void {
  if (depth > MAX_META_DEPTH) {
    throw new Bad(`"${path}" is nested deeper than ${MAX_META_DEPTH} levels`);
  }
  if (Array.isArray(v)) {
    for (const x of v) checkJson(x, depth + 1, path);
  } else if (isObject(v)) {
    for (const k of Object.keys(v)) {
      if (FORBIDDEN_KEYS.has(k)) {
        throw new Bad(`"${path}" has forbidden key "${k}"`);
      }
      checkJson(v[k], depth + 1, path);
    }
  }
}

function meta(o: { [key: string]: unknown }): Meta | undefined {
  const v = o.meta;
  if (v === undefined) return undefined;
  if (!isObject(v)) throw new Bad(`"meta" must be an object`);
  checkJson(v, 0, "meta");
  return v as Meta;
}

function validate(o: { [key: string]: unknown }, id: number): Request {
  const op = o.op;
  if (typeof op !== "string") throw new Bad(`"op" must be a string`);
  if (!OPS.has(op)) throw new Bad(`unknown operation "${op.slice(0, 64)}"`);
  switch (op) {
    case "hello": {
      if (!Number.isInteger(o.v)) throw new Bad(`"v" must be an integer`);
      const r: {
        id: number;
        op: "hello";
        v: number;
        env?: string;
        advertise?: string;
        session?: string;
        lost?: boolean;
      } = {
        id,
        op,
        v: o.v as number,
      };
      const env = optStr(o, "env");
      if (env !== undefined) r.env = env;
      if (o.advertise !== undefined) {
        const a = str(o, "advertise", 255);
        // deno-lint-ignore no-control-regex
        if (a === "" || /[\s\u0000-\u001f]/.test(a)) {
          throw new Bad(`"advertise" must be a host name or address`);
        }
        r.advertise = a;
      }
      if (o.session !== undefined) {
        const session = str(o, "session", 128);
        if (!/^[\x21-\x7e]+$/.test(session)) {
          throw new Bad(
            `"session" must be 1 to 128 visible ASCII characters`,
          );
        }
        r.session = session;
      }
      if (o.lost !== undefined) {
        if (typeof o.lost !== "boolean") {
          throw new Bad(`"lost" must be a boolean`);
        }
        if (o.lost) r.lost = true;
      }
      return r;
    }
    case "auth":
      return { id, op, mac: str(o, "mac", 256) };
    case "allocate": {
      const r: {
        id: number;
        op: "allocate";
        role: string;
        meta?: Meta;
        port?: number;
        exclude?: number[];
        ready?: boolean;
      } = { id, op, role: str(o, "role") };
      const ready = optBool(o, "ready");
      if (ready !== undefined) r.ready = ready;
      const m = meta(o);
      if (m !== undefined) r.meta = m;
      if (o.port !== undefined) r.port = port(o, "port");
      if (o.exclude !== undefined) r.exclude = exclude(o);
      return r;
    }
    case "ready":
    case "unready":
      return { id, op, rid: str(o, "rid", 128) };
    case "assume": {
      const r: {
        id: number;
        op: "assume";
        role: string;
        port: number;
        meta?: Meta;
        ready?: boolean;
      } = { id, op, role: str(o, "role"), port: port(o, "port") };
      const m = meta(o);
      if (m !== undefined) r.meta = m;
      const ready = optBool(o, "ready");
      if (ready !== undefined) r.ready = ready;
      return r;
    }
    case "evict":
      return { id, op, host: str(o, "host", 255), port: port(o, "port") };
    case "free": {
      if (o.rid !== undefined) return { id, op, rid: str(o, "rid", 128) };
      if (o.port !== undefined) return { id, op, port: port(o, "port") };
      throw new Bad(`"free" needs "rid" or "port"`);
    }
    case "query": {
      const r: {
        id: number;
        op: "query";
        pattern?: string;
        env?: string;
        all?: boolean;
        since?: boolean;
      } = { id, op };
      const pattern = optStr(o, "pattern");
      if (pattern !== undefined) r.pattern = pattern;
      scope(o, r);
      const since = optBool(o, "since");
      if (since !== undefined) r.since = since;
      return r;
    }
    case "get": {
      const env = optStr(o, "env");
      const pattern = str(o, "pattern");
      return env === undefined ? { id, op, pattern } : { id, op, pattern, env };
    }
    case "cancel": {
      const t = o.target;
      if (!Number.isSafeInteger(t) || (t as number) < 0) {
        throw new Bad(`"target" must be a request id`);
      }
      return { id, op, target: t as number };
    }
    case "subscribe":
    case "unsubscribe": {
      const r: {
        id: number;
        op: "subscribe" | "unsubscribe";
        env?: string;
        all?: boolean;
        snapshot?: boolean;
      } = { id, op };
      scope(o, r);
      const snapshot = optBool(o, "snapshot");
      if (snapshot !== undefined) r.snapshot = snapshot;
      return r;
    }
    case "batch": {
      const items = o.ops;
      if (!Array.isArray(items) || items.length > MAX_BATCH) {
        throw new Bad(
          `"ops" must be an array of at most ${MAX_BATCH} operations`,
        );
      }
      const ops = items.map((item) => batchItem(item, id));
      return o.exclude === undefined
        ? { id, op, ops }
        : { id, op, ops, exclude: exclude(o) };
    }
    case "peek": {
      if (o.count === undefined) return { id, op };
      const n = o.count;
      if (
        !Number.isInteger(n) || (n as number) < 1 || (n as number) > MAX_PEEK
      ) {
        throw new Bad(`"count" must be an integer from 1 to ${MAX_PEEK}`);
      }
      return { id, op, count: n as number };
    }
    default:
      return { id, op: op as "ping" };
  }
}

/** One item of a `batch`, checked as the request it stands for. */
function batchItem(
  item: unknown,
  id: number,
): BatchItem | { error: WireError } {
  try {
    if (!isObject(item)) throw new Bad("an operation must be a JSON object");
    if (typeof item.op !== "string" || !BATCHABLE.has(item.op)) {
      throw new Bad(
        `"op" of a batched operation must be one of ${
          [...BATCHABLE].join(", ")
        }`,
      );
    }
    return validate(item, id) as BatchItem; // its id is the batch's
  } catch (err) {
    if (!(err instanceof Bad)) throw err;
    return {
      error: { code: "BAD_REQUEST", message: `Bad request: ${err.message}` },
    };
  }
}

/**
 * Parses and validates one line sent by a client.
 *
 * @returns The checked request, or what to answer when it is invalid.
 */
export function parseRequest(line: string): Request | Invalid {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return {
      id: null,
      error: {
        code: "PROTOCOL",
        message: "Malformed JSON: the line is not valid JSON",
      },
    };
  }
  if (!isObject(v)) {
    return {
      id: null,
      error: {
        code: "BAD_REQUEST",
        message: "A request must be a JSON object",
      },
    };
  }
  const id = v.id;
  if (!Number.isSafeInteger(id) || (id as number) < 0) {
    return {
      id: null,
      error: {
        code: "BAD_REQUEST",
        message: `"id" must be a non-negative integer`,
      },
    };
  }
  try {
    return validate(v, id as number);
  } catch (err) {
    if (!(err instanceof Bad)) throw err;
    return {
      id: id as number,
      error: { code: "BAD_REQUEST", message: `Bad request: ${err.message}` },
    };
  }
}

/** Whether {@linkcode parseRequest} rejected the line. */
export function isInvalid(r: Request | Invalid): r is Invalid {
  return "error" in r;
}

/**
 * Parses one line sent by a server.
 *
 * @returns The message, or `undefined` if it is not a valid server message.
 */
export function parseServerMessage(line: string): ServerMessage | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (!isObject(v)) return undefined;
  if (typeof v.ev === "string") {
    if (!isObject(v.record)) return undefined;
    if (v.ev === "lost") {
      if (v.reason !== "assume" && v.reason !== "evict") return undefined;
      return v as unknown as LostMessage;
    }
    if (v.ev !== "allocate" && v.ev !== "assume" && v.ev !== "free") {
      return undefined;
    }
    return v as unknown as EventMessage;
  }
  if (v.id !== null && !Number.isSafeInteger(v.id)) return undefined;
  if ("error" in v) {
    const e = v.error;
    if (!isObject(e) || typeof e.code !== "string") return undefined;
    return {
      id: v.id as number | null,
      error: { code: e.code, message: String(e.message) },
    };
  }
  if (!("result" in v) || v.id === null) return undefined;
  return v as unknown as Reply; // checked: an id and a result
}

/** Encodes one message as a line of JSON. */
export function encode(message: Request | ServerMessage): string {
  return JSON.stringify(message) + "\n";
}

/**
 * Encodes a request body under `id`, as {@linkcode encode} would encode
 * `{ id, ...body }`, without building that object.
 */
export function encodeRequest(id: number, body: { op: string }): string {
  return `{"id":${id},${JSON.stringify(body).slice(1)}\n`;
}

/**
 * Encodes a reply whose result is already JSON text (a cached answer), as
 * {@linkcode encode} would encode `{ id, result }`.
 */
export function encodeReply(id: number, resultJson: string): string {
  return `{"id":${id},"result":${resultJson}}\n`;
}

/** What {@linkcode LineSplitter} reports for a line over the limit. */
export const LINE_TOO_LONG: unique symbol = Symbol("LINE_TOO_LONG");

/**
 * Splits a byte stream into lines of at most `maxLineBytes` bytes, whatever
 * the chunking. A longer line is reported once as {@linkcode LINE_TOO_LONG}
 * and its bytes are dropped up to the next newline, so memory stays bounded
 * and the stream stays usable. A trailing `\r` is removed; empty lines are
 * skipped.
 */
export class LineSplitter {
  #parts: Uint8Array[] = [];
  #length = 0;
  #discarding = false;
  #decoder = new TextDecoder();
  readonly maxLineBytes: number;

  constructor(maxLineBytes: number = DEFAULT_MAX_LINE_BYTES) {
    if (!Number.isInteger(maxLineBytes) || maxLineBytes < 1) {
      throw new RangeError(
        `maxLineBytes must be a positive integer, got ${maxLineBytes}`,
      );
    }
    this.maxLineBytes = maxLineBytes;
  }

  /** Feeds a chunk; calls `onLine` for each complete line in it. */
  push(
    chunk: Uint8Array,
    onLine: (line: string | typeof LINE_TOO_LONG) => void,
  ): void {
    let start = 0;
    if (this.#length === 0 && !this.#discarding) {
      start = this.#whole(chunk, onLine);
      if (start === chunk.length) return;
    }
    const max = this.maxLineBytes;
    while (start <= chunk.length) {
      const nl = chunk.indexOf(10, start);
      if (nl < 0) {
        if (this.#discarding || start === chunk.length) return;
        const rest = chunk.subarray(start);
        // one byte of slack: a "\r" that the next chunk's "\n" will drop
        if (this.#length + rest.length > max + 1) {
          this.#overflow(onLine);
          return;
        }
        // A copy: the caller may reuse `chunk`, and a view would keep its
        // whole buffer (64 KiB per read on Deno) alive for every byte.
        this.#parts.push(rest.slice());
        this.#length += rest.length;
        return;
      }
      const piece = chunk.subarray(start, nl);
      start = nl + 1;
      if (this.#discarding) {
        this.#discarding = false;
        continue;
      }
      let end = piece.length;
      if (end > 0 && piece[end - 1] === 13) end--;
      else if (end === 0 && this.#length > 0) {
        const last = this.#parts[this.#parts.length - 1]!;
        if (last[last.length - 1] === 13) {
          this.#parts[this.#parts.length - 1] = last.subarray(
            0,
            last.length - 1,
          );
          this.#length--;
        }
      }
      if (this.#length + end > max) {
        this.#parts = [];
        this.#length = 0;
        onLine(LINE_TOO_LONG);
        continue;
      }
      const line = this.#take(piece.subarray(0, end));
      if (line.length > 0) onLine(line);
    }
  }

  /**
   * The fast path for a chunk that starts a line: its complete lines decoded
   * as one string and cut there (no view and no decode per line). Only when
   * every byte decoded to one UTF-16 unit (ASCII, or a lone invalid byte), so
   * that string offsets are byte offsets and each line decodes as it would
   * alone; otherwise nothing is taken and the bytes go the general way.
   *
   * @returns Where the bytes not yet taken start.
   */
  #whole(
    chunk: Uint8Array,
    onLine: (line: string | typeof LINE_TOO_LONG) => void,
  ): number {
    const last = chunk.lastIndexOf(10);
    if (last < 0) return 0;
    const text = this.#decoder.decode(
      last === chunk.length - 1 ? chunk : chunk.subarray(0, last + 1),
    );
    if (text.length !== last + 1) return 0;
    const max = this.maxLineBytes;
    let start = 0;
    while (start <= last) {
      const nl = text.indexOf("\n", start);
      let end = nl;
      if (end > start && text.charCodeAt(end - 1) === 13) end--;
      if (end - start > max) onLine(LINE_TOO_LONG);
      else if (end > start) onLine(text.slice(start, end));
      start = nl + 1;
    }
    return start;
  }

  #overflow(onLine: (line: typeof LINE_TOO_LONG) => void): void {
    this.#parts = [];
    this.#length = 0;
    this.#discarding = true;
    onLine(LINE_TOO_LONG);
  }

  #take(tail: Uint8Array): string {
    if (this.#length === 0) return this.#decoder.decode(tail);
    const buf = new Uint8Array(this.#length + tail.length);
    let off = 0;
    for (const p of this.#parts) {
      buf.set(p, off);
      off += p.length;
    }
    buf.set(tail, off);
    this.#parts = [];
    this.#length = 0;
    return this.#decoder.decode(buf);
  }
}

/**
 * A Web Streams form of {@linkcode LineSplitter}: bytes in, lines (or
 * {@linkcode LINE_TOO_LONG}) out.
 */
export class LineDecoderStream
  extends TransformStream<Uint8Array, string | typeof LINE_TOO_LONG> {
  constructor(maxLineBytes: number = DEFAULT_MAX_LINE_BYTES) {
    const splitter = new LineSplitter(maxLineBytes);
    super({
      transform(chunk, controller) {
        splitter.push(chunk, (line) => controller.enqueue(line));
      },
    });
  }
}
