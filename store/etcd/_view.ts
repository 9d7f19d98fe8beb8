/**
 * What the etcd store's local view keeps per key beside the pure registry:
 * the key's mod revision, whether it was written by an `assume`, and which
 * connection of this server holds it. Everything else is derived from the
 * registry's own record: the key from its host and port, the value from its
 * fields, a connection's keys from the registry's per-session index. Per
 * registration that is one slot of a per-host {@linkcode PortSlots} (a
 * port, a revision, a flag and a reference: 15 bytes a slot, 20–40 at its
 * load), instead of the key, a parsed value and three map entries.
 *
 * @module
 */
import {
  type Meta,
  RESERVED_KEYS,
  type ServiceRecord,
} from "../../registry.ts";
import { PortSlots } from "../../_tables.ts";

/** One registration as etcd holds it. */
export interface Stored {
  id: string;
  host: string;
  port: number;
  role: string;
  env: string;
  meta?: Meta;
  session: string;
  server: string;
  ready: boolean;
  kind: "allocate" | "assume";
}

/** A value as the view knows it: who serves it now is not kept. */
export type Value = Omit<Stored, "server">;

/** What the view knows of one key. */
export interface Known {
  /** The key's mod revision (or the revision of its delete). */
  readonly rev: number;
  /** Its value; `undefined` once it was deleted. */
  readonly value: Value | undefined;
}

/** A client connection of this server. */
export class Local {
  /** How many keys it holds. */
  count = 0;
  dropped = false;
  /** The sid, and the server's connection (told when a key is lost). */
  constructor(readonly sid: string, readonly owner: unknown) {}
}

/** What the view reads of the registry. */
export interface Records {
  holder(
    host: string,
    port: number,
  ): { record: ServiceRecord; owner: unknown; ready: boolean } | undefined;
  recordOf(owner: string, id: string): ServiceRecord | undefined;
  recordsOf(owner: string): readonly ServiceRecord[];
}

/** A key's host and port. */
export interface Where {
  readonly host: string;
  readonly port: number;
}

/** Hosts remembered (encoded ↔ decoded) before the caches start over. */
const HOSTS_MAX = 4096;

/**
 * What the view knows of every key under `P/ports/`. A key whose value the
 * registry holds lives in its host's {@linkcode PortSlots}; the rest (the
 * revisions of recent deletes until the watch passes them, and values the
 * registry would not take) in a small map of their own.
 */
export class Revisions {
  readonly #ports: string;
  readonly #reg: Records;
  readonly #hosts = new Map<string, PortSlots<Local>>();
  /** Keys the registry does not hold: deleted ones, values not seaport's. */
  readonly #other = new Map<string, Known>();
  /** Host → `P/ports/<encoded host>/`. */
  #prefixes = new Map<string, string>();
  /** Encoded host → host. */
  #decoded = new Map<string, string>();
  #lastKey = "";
  #last: Where | undefined;
  /** The last host parsed, and its keys' prefix `P/ports/<encoded host>/`. */
  #host = "";
  #hostPrefix = "";
  #slotKey = "";
  #slotTable: PortSlots<Local> | undefined;
  #slotAt = -1;

  constructor(ports: string, reg: Records) {
    this.#ports = ports;
    this.#reg = reg;
  }

  /** The key of a host's port. */
  key(host: string, port: number): string {
    let p = this.#prefixes.get(host);
    if (p === undefined) {
      if (this.#prefixes.size >= HOSTS_MAX) this.#prefixes.clear();
      p = `${this.#ports}${encodeURIComponent(host)}/`;
      this.#prefixes.set(host, p);
    }
    return p + port;
  }

  /** The host and port a key names, or `undefined` for a key not ours. */
  where(key: string): Where | undefined {
    if (key === this.#lastKey) return this.#last;
    this.#lastKey = key;
    // Most keys in a row are of one host: its prefix is checked, not parsed.
    let from = this.#hostPrefix.length;
    let host = this.#host;
    if (from === 0 || !key.startsWith(this.#hostPrefix)) {
      const slash = key.lastIndexOf("/");
      const decoded = key.startsWith(this.#ports) && slash > this.#ports.length
        ? this.#decode(key.slice(this.#ports.length, slash))
        : undefined;
      if (decoded === undefined) return this.#last = undefined;
      from = slash + 1;
      host = decoded;
      this.#hostPrefix = key.slice(0, from);
      this.#host = host;
    }
    // 1-65535 in decimal, no leading zero
    let port = 0;
    const n = key.length - from;
    if (n < 1 || n > 5 || key.charCodeAt(from) === 48) {
      return this.#last = undefined;
    }
    for (let i = from; i < key.length; i++) {
      const d = key.charCodeAt(i) - 48;
      if (d < 0 || d > 9) return this.#last = undefined;
      port = port * 10 + d;
    }
    if (port > 65535) return this.#last = undefined;
    return this.#last = { host, port };
  }

  #decode(encoded: string): string | undefined {
    const known = this.#decoded.get(encoded);
    if (known !== undefined) return known;
    let host: string;
    try {
      host = decodeURIComponent(encoded);
    } catch {
      return undefined;
    }
    if (encodeURIComponent(host) !== encoded) return undefined; // not ours
    if (this.#decoded.size >= HOSTS_MAX) this.#decoded.clear();
    this.#decoded.set(encoded, host);
    return host;
  }

  /**
   * The key's slot in its host's table, or -1; `#slotTable` is that table.
   * Remembered for the last key until a slot moves (`hold`, `other`).
   */
  #slot(key: string): number {
    if (key === this.#slotKey) return this.#slotAt;
    const at = this.where(key);
    const t = at === undefined ? undefined : this.#hosts.get(at.host);
    this.#slotKey = key;
    this.#slotTable = t;
    return this.#slotAt = t === undefined ? -1 : t.find(at!.port);
  }

  /** The key's mod revision (or its delete's), if known. */
  rev(key: string): number | undefined {
    if (this.#other.size > 0) {
      const other = this.#other.get(key);
      if (other !== undefined) return other.rev;
    }
    const i = this.#slot(key);
    return i < 0 ? undefined : this.#slotTable!.numberAt(i);
  }

  /** Whether the registry holds the key's value. */
  held(key: string): boolean {
    return this.#slot(key) >= 0;
  }

  /** The id of the registration the key holds, if the registry holds it. */
  idAt(key: string): string | undefined {
    if (this.#slot(key) < 0) return undefined;
    const at = this.where(key)!;
    return this.#reg.holder(at.host, at.port)?.record.id;
  }

  /** What the view knows of the key, its value derived from the registry. */
  known(key: string): Known | undefined {
    if (this.#other.size > 0) {
      const other = this.#other.get(key);
      if (other !== undefined) return other;
    }
    const i = this.#slot(key);
    if (i < 0) return undefined;
    const t = this.#slotTable!;
    const at = this.where(key)!;
    const h = this.#reg.holder(at.host, at.port);
    if (h === undefined) return undefined;
    const r = h.record;
    const value: Value = {
      id: r.id,
      host: r.host,
      port: r.port,
      role: `${r.role}@${r.version}`,
      env: r.env,
      session: h.owner as string,
      ready: h.ready,
      kind: t.flagAt(i) ? "assume" : "allocate",
    };
    const meta = metaOf(r);
    if (meta !== undefined) value.meta = meta;
    return { rev: t.numberAt(i), value };
  }

  /** The connection of this server holding the key. */
  holder(key: string): Local | undefined {
    const i = this.#slot(key);
    return i < 0 ? undefined : this.#slotTable!.refAt(i);
  }

  /** Makes `holder` the key's holder, if the registry holds the key. */
  setHolder(key: string, holder: Local | undefined): void {
    const i = this.#slot(key);
    if (i < 0) return;
    const t = this.#slotTable!;
    const old = t.refAt(i);
    if (old === holder) return;
    t.setRefAt(i, holder);
    if (old !== undefined) old.count--;
    if (holder !== undefined) holder.count++;
  }

  /** The registry now holds the key's value, written at `rev`. */
  hold(
    key: string,
    rev: number,
    kind: "allocate" | "assume",
    holder: Local | undefined,
  ): void {
    if (this.#other.size > 0) this.#other.delete(key);
    const old = this.holder(key);
    const at = this.where(key)!;
    let t = this.#hosts.get(at.host);
    if (t === undefined) this.#hosts.set(at.host, t = new PortSlots());
    this.#slotKey = ""; // slots may move
    t.set(at.port, rev, kind === "assume", holder);
    if (old === holder) return;
    if (old !== undefined) old.count--;
    if (holder !== undefined) holder.count++;
  }

  /**
   * The key was deleted at `rev`, or holds a value the registry does not
   * take: no longer in its host's table.
   */
  other(key: string, rev: number, value?: Stored): void {
    const i = this.#slot(key);
    if (i >= 0) {
      const t = this.#slotTable!;
      const at = this.where(key)!;
      const old = t.refAt(i);
      if (old !== undefined) old.count--;
      this.#slotKey = ""; // slots move
      t.delete(at.port);
      if (t.size === 0) this.#hosts.delete(at.host);
    }
    this.#other.set(key, { rev, value });
  }

  /** Forgets a deleted key once nothing older than `rev` can come. */
  forget(key: string, rev: number): void {
    if (this.#other.size === 0) return;
    const other = this.#other.get(key);
    if (other !== undefined && other.value === undefined && other.rev <= rev) {
      this.#other.delete(key);
    }
  }

  /** Every key known, with its revision. */
  revs(): [key: string, rev: number][] {
    const out: [string, number][] = [];
    for (const [key, k] of this.#other) out.push([key, k.rev]);
    for (const [host, t] of this.#hosts) {
      for (const [port, rev] of t.entries()) {
        out.push([this.key(host, port), rev]);
      }
    }
    return out;
  }

  /** The keys `st` holds, found through the registry's index of its session. */
  keysOf(st: Local): string[] {
    if (st.count === 0) return [];
    const out: string[] = [];
    for (const r of this.#reg.recordsOf(st.sid)) {
      const key = this.key(r.host, r.port);
      if (this.holder(key) === st) out.push(key);
    }
    return out;
  }

  /** The key of registration `id` when `st` holds it. */
  keyOf(st: Local, id: string): string | undefined {
    const r = this.#reg.recordOf(st.sid, id);
    if (r === undefined) return undefined;
    const key = this.key(r.host, r.port);
    return this.holder(key) === st ? key : undefined;
  }
}

/** A record's metadata: its fields but the reserved ones. */
function metaOf(r: ServiceRecord): Meta | undefined {
  let meta: Meta | undefined;
  for (const k of Object.keys(r)) {
    const v = r[k];
    if (v !== undefined && !RESERVED_KEYS.has(k)) (meta ??= {})[k] = v;
  }
  return meta;
}

/**
 * Whether two registrations' metadata are the same as the registry keeps
 * them (without the reserved keys; none and `{}` alike).
 */
export function sameMeta(a: Meta | undefined, b: Meta | undefined): boolean {
  return JSON.stringify(kept(a)) === JSON.stringify(kept(b));
}

function kept(m: Meta | undefined): Meta | null {
  if (m === undefined || m === null || typeof m !== "object") return null;
  let out: Meta | null = null;
  for (const k of Object.keys(m)) {
    if (!RESERVED_KEYS.has(k)) (out ??= {})[k] = m[k]!;
  }
  return out;
}
