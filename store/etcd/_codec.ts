/**
 * The etcd v3 JSON gateway's encoding: keys and values are base64, int64
 * fields arrive as strings, and fields with their default value (0, false,
 * "", []) are left out of every answer.
 *
 * @module
 */

import { ProtocolError } from "../../errors.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A key or value as callers give it: UTF-8 text or raw bytes. */
export type Bytes = string | Uint8Array;

/** The bytes of a key or value. */
export function bytesOf(b: Bytes): Uint8Array {
  return typeof b === "string" ? encoder.encode(b) : b;
}

/**
 * Anything but printable ASCII, tab and line breaks: text without it is its
 * own UTF-8 (other text takes the byte path, which is right for all).
 */
const NOT_ASCII = /[^ -~\t\n\r]/;

/** Base64 of `b`, as the gateway wants keys and values. */
export function b64(b: Bytes): string {
  // printable ASCII is its own UTF-8: btoa takes it as it is
  if (typeof b === "string" && !NOT_ASCII.test(b)) return btoa(b);
  const bytes = bytesOf(b);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

/** The bytes of a base64 field (absent means empty). */
export function unb64(s: unknown, field: string): Uint8Array {
  if (s === undefined) return new Uint8Array(0);
  if (typeof s !== "string") throw badField(field, s);
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** A base64 field as UTF-8 text. */
export function unb64Text(s: unknown, field: string): string {
  if (typeof s === "string") {
    const bin = atob(s);
    // printable ASCII bytes are their own text
    if (!NOT_ASCII.test(bin)) return bin;
  }
  return decoder.decode(unb64(s, field));
}

/**
 * An int64 field as a number: the gateway sends a string (or, rarely, a
 * number); absent means 0. Throws past 2^53, which no revision, version,
 * count or TTL reaches.
 */
export function int(v: unknown, field: string): number {
  if (v === undefined) return 0;
  const n = typeof v === "string" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isSafeInteger(n)) {
    throw badField(field, v);
  }
  return n;
}

/**
 * An int64 identifier (lease, member, cluster) as a decimal string: lease IDs
 * are random 63-bit numbers that a JavaScript number cannot hold. Absent
 * means "0".
 */
export function id(v: unknown, field: string): string {
  if (v === undefined) return "0";
  if (typeof v === "string" && /^-?\d+$/.test(v)) return v;
  if (typeof v === "number" && Number.isSafeInteger(v)) return String(v);
  throw badField(field, v);
}

/** The end of the range of every key that starts with `prefix`. */
export function prefixEnd(prefix: Bytes): Uint8Array {
  const p = bytesOf(prefix);
  for (let i = p.length - 1; i >= 0; i--) {
    if (p[i]! < 0xff) {
      const end = p.slice(0, i + 1);
      end[i]!++;
      return end;
    }
  }
  // An empty prefix, or only 0xff bytes: to the end of the key space.
  return new Uint8Array([0]);
}

/** A key-value pair as etcd stores it. */
export interface KeyValue {
  /** The key, as UTF-8 text. */
  key: string;
  /** The value, as UTF-8 text. */
  value: string;
  /** The revision of the last creation of this key. */
  createRevision: number;
  /** The revision of the last change of this key. */
  modRevision: number;
  /** How many times the key was changed since its creation (1 after it). */
  version: number;
  /** The ID of the lease the key is attached to, `"0"` for none. */
  lease: string;
}

/** The answer's header: the store's revision when the request was served. */
export interface Header {
  /** The revision of the store. */
  revision: number;
  /** The ID of the member that served the request. */
  memberId: string;
  /** The raft term. */
  raftTerm: number;
}

type Json = Record<string, unknown>;

/** `v` as a JSON object, or a clear error naming `what`. */
export function obj(v: unknown, what: string): Json {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw badField(what, v);
  }
  return v as Json;
}

/** An array field (absent means empty). */
export function arr(v: unknown, what: string): unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw badField(what, v);
  return v;
}

/** A decoded `mvccpb.KeyValue`. */
export function keyValue(v: unknown, what = "kv"): KeyValue {
  const o = obj(v, what);
  return {
    key: unb64Text(o.key, `${what}.key`),
    value: unb64Text(o.value, `${what}.value`),
    createRevision: int(o.create_revision, `${what}.create_revision`),
    modRevision: int(o.mod_revision, `${what}.mod_revision`),
    version: int(o.version, `${what}.version`),
    lease: id(o.lease, `${what}.lease`),
  };
}

/** A decoded `ResponseHeader` (absent fields are 0). */
export function header(v: unknown): Header {
  const o = v === undefined ? {} : obj(v, "header");
  return {
    revision: int(o.revision, "header.revision"),
    memberId: id(o.member_id, "header.member_id"),
    raftTerm: int(o.raft_term, "header.raft_term"),
  };
}

function badField(field: string, v: unknown): ProtocolError {
  const shown = JSON.stringify(v) ?? String(v);
  return new ProtocolError(
    "PROTOCOL",
    `etcd sent an unexpected "${field}": ${shown.slice(0, 80)}`,
  );
}
