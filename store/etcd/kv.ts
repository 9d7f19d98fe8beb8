/**
 * etcd's KV service over the JSON gateway: range, put, delete range, txn and
 * compaction.
 *
 * @module
 */
import {
  arr,
  b64,
  type Bytes,
  bytesOf,
  type Header,
  header,
  int,
  type KeyValue,
  keyValue,
  obj,
  prefixEnd,
} from "./_codec.ts";
import type { Endpoints, Json } from "./_endpoints.ts";
import { ProtocolError } from "../../errors.ts";

/** Which keys a range, delete or watch covers. */
export interface RangeOptions {
  /** Every key that starts with `key` (overrides `end`). */
  prefix?: boolean;
  /** The end of the range, exclusive: keys in [key, end). */
  end?: Bytes;
}

/** Options of {@linkcode KV.get}. */
export interface GetOptions extends RangeOptions {
  /** At most this many keys (0: no limit). */
  limit?: number;
  /** Read the store as it was at this revision (0: the newest). */
  revision?: number;
  /** Leave out the values. */
  keysOnly?: boolean;
  /** Only count the keys. */
  countOnly?: boolean;
  /**
   * Let the member answer from its local state without asking the leader:
   * faster, works without quorum, may be stale.
   */
  serializable?: boolean;
}

/** The answer to {@linkcode KV.get}. */
export interface GetResult {
  /** The header; `header.revision` is the revision the read saw. */
  header: Header;
  /** The keys found, in key order. */
  kvs: KeyValue[];
  /** How many keys the range holds (more than `kvs.length` past a limit). */
  count: number;
  /** Whether the limit cut off more keys. */
  more: boolean;
}

/** Options of {@linkcode KV.put}. */
export interface PutOptions {
  /** Attach the key to this lease: it is deleted when the lease ends. */
  lease?: string;
  /** Return the previous key-value pair. */
  prevKv?: boolean;
}

/** The answer to {@linkcode KV.put}. */
export interface PutResult {
  /** The header; `header.revision` is the revision of this put. */
  header: Header;
  /** The pair before the put, if asked for and there was one. */
  prevKv?: KeyValue;
}

/** Options of {@linkcode KV.delete}. */
export interface DeleteOptions extends RangeOptions {
  /** Return the deleted pairs. */
  prevKv?: boolean;
}

/** The answer to {@linkcode KV.delete}. */
export interface DeleteResult {
  /** The header; `header.revision` is the revision of this delete. */
  header: Header;
  /** How many keys were deleted. */
  deleted: number;
  /** The deleted pairs, if asked for. */
  prevKvs: KeyValue[];
}

/**
 * One condition of a transaction: `target` of `key` compared with `value`.
 * A key that does not exist has create and mod revision 0 and version 0, so
 * `{ key, target: "create", result: "=", value: 0 }` means "does not exist".
 */
export type Compare =
  & { key: Bytes; result: "=" | "!=" | "<" | ">" }
  & RangeOptions
  & (
    | { target: "create" | "mod" | "version"; value: number }
    | { target: "value"; value: Bytes }
    | { target: "lease"; value: string }
  );

/** One operation of a transaction. */
export type Op =
  | ({ op: "get"; key: Bytes } & GetOptions)
  | ({ op: "put"; key: Bytes; value: Bytes } & PutOptions)
  | ({ op: "delete"; key: Bytes } & DeleteOptions);

/** A transaction: if every compare holds, `success` runs, else `failure`. */
export interface Txn {
  /** The conditions, all of which must hold. */
  compare?: Compare[];
  /** The operations run when they hold. */
  success?: Op[];
  /** The operations run when one does not. */
  failure?: Op[];
}

/** The answer of one operation of a transaction, in order. */
export type OpResult =
  | ({ op: "get" } & GetResult)
  | ({ op: "put" } & PutResult)
  | ({ op: "delete" } & DeleteResult);

/** The answer to {@linkcode KV.txn}. */
export interface TxnResult {
  /** The header; `header.revision` is the revision after the transaction. */
  header: Header;
  /** Whether every compare held (so `success` ran). */
  succeeded: boolean;
  /** The answers of the operations that ran. */
  responses: OpResult[];
}

/** etcd's key-value service. */
export interface KV {
  /**
   * Reads a key, or a range of keys.
   *
   * @param key The key, or the start of the range.
   * @param options The range, limit, revision and consistency.
   * @returns The pairs found and the revision read.
   * @throws {UnavailableError} When no endpoint answers in time.
   * @throws {EtcdError} When etcd refuses (e.g. a compacted revision).
   */
  get(key: Bytes, options?: GetOptions): Promise<GetResult>;
  /**
   * Writes a key.
   *
   * @param key The key.
   * @param value The value.
   * @param options The lease to attach it to; whether to return the old pair.
   * @returns The revision of the write.
   * @throws {UnavailableError} When no endpoint answers in time.
   */
  put(key: Bytes, value: Bytes, options?: PutOptions): Promise<PutResult>;
  /**
   * Deletes a key, or a range of keys.
   *
   * @param key The key, or the start of the range.
   * @param options The range; whether to return the deleted pairs.
   * @returns How many keys were deleted.
   * @throws {UnavailableError} When no endpoint answers in time.
   */
  delete(key: Bytes, options?: DeleteOptions): Promise<DeleteResult>;
  /**
   * Runs a transaction atomically.
   *
   * @param txn The compares and the operations of each branch.
   * @returns Which branch ran and its answers.
   * @throws {RangeError} When a branch has more operations than allowed.
   * @throws {UnavailableError} When no endpoint answers in time.
   */
  txn(txn: Txn): Promise<TxnResult>;
  /**
   * Forgets the history before `revision`: a watch or read from an older
   * revision fails as compacted.
   *
   * @param revision The first revision to keep.
   * @param options Wait until the space is really freed.
   * @throws {EtcdError} When `revision` is already compacted or in the future.
   */
  compact(revision: number, options?: { physical?: boolean }): Promise<void>;
}

/** The range fields of a request. */
export function rangeJson(key: Bytes, o: RangeOptions): Json {
  const j: Json = { key: b64(key) };
  if (o.prefix) j.range_end = b64(prefixEnd(key));
  else if (o.end !== undefined) j.range_end = b64(o.end);
  if (bytesOf(key).length === 0 && j.range_end === undefined) {
    throw new TypeError("An etcd key must not be empty");
  }
  return j;
}

function nonNegative(n: number | undefined, what: string): number | undefined {
  if (n === undefined) return undefined;
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`"${what}" must be a non-negative integer, got ${n}`);
  }
  return n;
}

function getJson(key: Bytes, o: GetOptions): Json {
  const j = rangeJson(key, o);
  const limit = nonNegative(o.limit, "limit");
  const revision = nonNegative(o.revision, "revision");
  if (limit) j.limit = limit;
  if (revision) j.revision = revision;
  if (o.keysOnly) j.keys_only = true;
  if (o.countOnly) j.count_only = true;
  if (o.serializable) j.serializable = true;
  return j;
}

function putJson(key: Bytes, value: Bytes, o: PutOptions): Json {
  if (bytesOf(key).length === 0) {
    throw new TypeError("An etcd key must not be empty");
  }
  const j: Json = { key: b64(key), value: b64(value) };
  if (o.lease !== undefined && o.lease !== "0") j.lease = o.lease;
  if (o.prevKv) j.prev_kv = true;
  return j;
}

function deleteJson(key: Bytes, o: DeleteOptions): Json {
  const j = rangeJson(key, o);
  if (o.prevKv) j.prev_kv = true;
  return j;
}

function getResult(r: Json): GetResult {
  return {
    header: header(r.header),
    kvs: arr(r.kvs, "kvs").map((kv) => keyValue(kv)),
    count: int(r.count, "count"),
    more: r.more === true,
  };
}

function putResult(r: Json): PutResult {
  const out: PutResult = { header: header(r.header) };
  if (r.prev_kv !== undefined) out.prevKv = keyValue(r.prev_kv, "prev_kv");
  return out;
}

function deleteResult(r: Json): DeleteResult {
  return {
    header: header(r.header),
    deleted: int(r.deleted, "deleted"),
    prevKvs: arr(r.prev_kvs, "prev_kvs").map((kv) => keyValue(kv, "prev_kv")),
  };
}

const RESULTS = {
  "=": "EQUAL",
  "!=": "NOT_EQUAL",
  "<": "LESS",
  ">": "GREATER",
};
const TARGETS = {
  create: ["CREATE", "create_revision"],
  mod: ["MOD", "mod_revision"],
  version: ["VERSION", "version"],
  value: ["VALUE", "value"],
  lease: ["LEASE", "lease"],
} as const;

function compareJson(c: Compare): Json {
  const result = RESULTS[c.result];
  const target = TARGETS[c.target];
  if (result === undefined || target === undefined) {
    throw new TypeError(
      `Invalid compare on "${
        String(c.key)
      }": result "${c.result}", target "${c.target}"`,
    );
  }
  const j: Json = { ...rangeJson(c.key, c), result, target: target[0] };
  j[target[1]] = c.target === "value"
    ? b64(c.value)
    : c.target === "lease"
    ? c.value
    : nonNegative(c.value, `compare ${c.target}`);
  return j;
}

function opJson(op: Op): Json {
  switch (op.op) {
    case "get":
      return { request_range: getJson(op.key, op) };
    case "put":
      return { request_put: putJson(op.key, op.value, op) };
    case "delete":
      return { request_delete_range: deleteJson(op.key, op) };
    default:
      throw new TypeError(
        `Invalid txn op ${JSON.stringify((op as { op: unknown }).op)}`,
      );
  }
}

function opResult(v: unknown): OpResult {
  const o = obj(v, "responses[]");
  if (o.response_range !== undefined) {
    return { op: "get", ...getResult(obj(o.response_range, "response_range")) };
  }
  if (o.response_put !== undefined) {
    return { op: "put", ...putResult(obj(o.response_put, "response_put")) };
  }
  if (o.response_delete_range !== undefined) {
    const d = obj(o.response_delete_range, "response_delete_range");
    return { op: "delete", ...deleteResult(d) };
  }
  throw new ProtocolError(
    "PROTOCOL",
    `etcd sent an unknown txn response: ${JSON.stringify(o).slice(0, 80)}`,
  );
}

/** The KV service over `endpoints`; a txn takes at most `maxTxnOps` ops. */
export function createKV(endpoints: Endpoints, maxTxnOps: number): KV {
  return {
    async get(key, options = {}) {
      const r = await endpoints.call("/v3/kv/range", getJson(key, options), {
        idempotent: true,
      });
      return getResult(r);
    },
    async put(key, value, options = {}) {
      const body = putJson(key, value, options);
      return putResult(
        await endpoints.call("/v3/kv/put", body, { idempotent: false }),
      );
    },
    async delete(key, options = {}) {
      const body = deleteJson(key, options);
      return deleteResult(
        await endpoints.call("/v3/kv/deleterange", body, { idempotent: false }),
      );
    },
    async txn(txn) {
      const success = txn.success ?? [];
      const failure = txn.failure ?? [];
      const compare = txn.compare ?? [];
      for (const [name, ops] of [["success", success], ["failure", failure]]) {
        if (ops!.length > maxTxnOps) {
          throw new RangeError(
            `A txn takes at most ${maxTxnOps} operations per branch ("maxTxnOps"); "${name}" has ${
              ops!.length
            }`,
          );
        }
      }
      const body: Json = {
        compare: compare.map(compareJson),
        success: success.map(opJson),
        failure: failure.map(opJson),
      };
      // A txn of reads only is safe to repeat on another endpoint.
      const idempotent = [...success, ...failure].every((o) => o.op === "get");
      const r = await endpoints.call("/v3/kv/txn", body, { idempotent });
      return {
        header: header(r.header),
        succeeded: r.succeeded === true,
        responses: arr(r.responses, "responses").map(opResult),
      };
    },
    async compact(revision, options = {}) {
      const body: Json = { revision: nonNegative(revision, "revision") };
      if (options.physical) body.physical = true;
      await endpoints.call("/v3/kv/compaction", body, { idempotent: true });
    },
  };
}
