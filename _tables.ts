/**
 * Compact indexes for the pure registry: who holds which port on a host, and
 * a connection's registrations by id (and, for the etcd store's view, numbers
 * by port). Plain arrays of references instead of
 * `Map`s, since a `Map` costs about 28 bytes per slot of its capacity (key,
 * value, chain and bucket) and its capacity doubles: 40–56 bytes per
 * registration in each index. Pure: no I/O, timers or runtime checks.
 *
 * @module
 */

/**
 * The ports held on one host. A `Map` while few of the range's ports are
 * held; once a quarter of them are, an array over the whole range (8 bytes a
 * port, held or not), back to a `Map` below a sixteenth. Ports outside the
 * range (assumed ones) always stay in the `Map`.
 */
export class PortTable<E> {
  readonly low: number;
  readonly high: number;
  /** Where the next pick starts. */
  cursor: number;
  #inRange = 0;
  #map = new Map<number, E>();
  #dense: (E | undefined)[] | undefined;
  /** Free ports just proposed to a client, passed over by picks a while. */
  #proposed: Holds | undefined;
  /** Free ports just freed, passed over by picks a while. */
  #freed: Holds | undefined;

  constructor(low: number, high: number, cursor: number) {
    this.low = low;
    this.high = high;
    this.cursor = cursor;
  }

  /** How many ports of the range are held. */
  get inRange(): number {
    return this.#inRange;
  }

  /** The holder of `port`, if any. */
  get(port: number): E | undefined {
    const d = this.#dense;
    if (d !== undefined && port >= this.low && port <= this.high) {
      return d[port - this.low];
    }
    return this.#map.get(port);
  }

  /** Whether `port` is held. */
  has(port: number): boolean {
    return this.get(port) !== undefined;
  }

  /**
   * Passes the free `port` over in picks until `until` (a time of the
   * caller's clock, as `now`), as proposed to a client or as just freed.
   */
  hold(port: number, kind: HoldKind, until: number, now: number): void {
    this.#unhold(port); // a port has one hold, the newest
    if (kind === "proposed") {
      (this.#proposed ??= new Holds()).add(port, until, now);
    } else (this.#freed ??= new Holds()).add(port, until, now);
  }

  /** Forgets `port`'s hold, if it has one. */
  #unhold(port: number): void {
    if (this.#proposed?.drop(port) && this.#proposed.empty) {
      this.#proposed = undefined;
    }
    if (this.#freed?.drop(port) && this.#freed.empty) this.#freed = undefined;
  }

  /** Whether any port is held (ones whose hold ended may count until pruned). */
  get holding(): boolean {
    return this.#proposed !== undefined || this.#freed !== undefined;
  }

  /** Forgets the holds that ended by `now`. */
  prune(now: number): void {
    if (this.#proposed?.prune(now)) this.#proposed = undefined;
    if (this.#freed?.prune(now)) this.#freed = undefined;
  }

  /** Whether a pick at `now` passes `port` over (see {@linkcode PortTable.hold}). */
  heldAt(port: number, now: number): boolean {
    return this.#proposed?.holds(port, now) === true ||
      this.#freed?.holds(port, now) === true;
  }

  /**
   * A pick's last resort when every free port of the range is held: the
   * one freed longest ago, else the one proposed longest ago (not in
   * `exclude`); `undefined` when none is.
   */
  oldestHeld(exclude: ReadonlySet<number> | undefined): number | undefined {
    for (const h of [this.#freed, this.#proposed]) {
      if (h === undefined) continue;
      for (const port of h.ports()) {
        if (
          port >= this.low && port <= this.high && !this.has(port) &&
          !exclude?.has(port)
        ) return port;
      }
    }
    return undefined;
  }

  /** Makes `e` the holder of `port` (replacing any). */
  set(port: number, e: E): void {
    this.#unhold(port);
    const inside = port >= this.low && port <= this.high;
    if (inside && this.get(port) === undefined) this.#inRange++;
    const d = this.#dense;
    if (d !== undefined && inside) d[port - this.low] = e;
    else this.#map.set(port, e);
    if (d === undefined && this.#inRange * 4 > this.high - this.low + 1) {
      this.#densify();
    }
  }

  /** Frees `port`. */
  delete(port: number): void {
    const inside = port >= this.low && port <= this.high;
    const d = this.#dense;
    if (d !== undefined && inside) {
      if (d[port - this.low] === undefined) return;
      d[port - this.low] = undefined;
      this.#inRange--;
      if (this.#inRange * 16 < d.length) this.#sparsify(d);
    } else if (this.#map.delete(port) && inside) this.#inRange--;
  }

  #densify(): void {
    const size = this.high - this.low + 1;
    const d = new Array<E | undefined>(size).fill(undefined);
    for (const [port, e] of this.#map) {
      if (port >= this.low && port <= this.high) {
        d[port - this.low] = e;
        this.#map.delete(port);
      }
    }
    this.#dense = d;
  }

  #sparsify(d: (E | undefined)[]): void {
    for (let i = 0; i < d.length; i++) {
      const e = d[i];
      if (e !== undefined) this.#map.set(this.low + i, e);
    }
    this.#dense = undefined;
  }
}

/** Why a free port is held back from picks. */
export type HoldKind = "proposed" | "freed";

/**
 * Ports held back until a time each, in the order held (one kind of hold
 * has one length, so they end in that order): the ended ones go from the
 * front; a port held again moves to the back.
 */
class Holds {
  #until = new Map<number, number>();
  /** When the ended holds were last forgotten. */
  #pruned = -Infinity;

  get empty(): boolean {
    return this.#until.size === 0;
  }

  add(port: number, until: number, now: number): void {
    this.#until.delete(port);
    this.#until.set(port, until);
    this.prune(now);
  }

  holds(port: number, now: number): boolean {
    const until = this.#until.get(port);
    return until !== undefined && until > now;
  }

  /** Forgets `port`'s hold (it is taken); whether it had one. */
  drop(port: number): boolean {
    return this.#until.delete(port);
  }

  /**
   * Forgets the holds that ended by `now`, at most every 100 ms (one that
   * ended holds nothing meanwhile); whether none is left.
   */
  prune(now: number): boolean {
    if (now - this.#pruned < 100) return false;
    this.#pruned = now;
    for (const [port, until] of this.#until) {
      if (until > now) break;
      this.#until.delete(port);
    }
    return this.#until.size === 0;
  }

  ports(): IterableIterator<number> {
    return this.#until.keys();
  }
}

/** FNV-1a over the UTF-16 units, with a final mix. */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  }
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  return (h ^ (h >>> 12)) >>> 0;
}

const MIN_SLOTS = 4;

/**
 * Records by their `id`: an open-addressing hash table (linear probing,
 * deletion by backward shift) of references alone, the key read from the
 * record, at most three quarters full: 11–21 bytes per record.
 */
export class IdTable<E extends { readonly id: string }> {
  #slots: (E | undefined)[] = new Array<E | undefined>(MIN_SLOTS).fill(
    undefined,
  );
  #size = 0;

  /** The number of records. */
  get size(): number {
    return this.#size;
  }

  /** The record with this id, if any. */
  get(id: string): E | undefined {
    const s = this.#slots;
    const mask = s.length - 1;
    for (let i = hash(id) & mask;; i = (i + 1) & mask) {
      const e = s[i];
      if (e === undefined || e.id === id) return e;
    }
  }

  /** Adds `e`, replacing a record with the same id. */
  add(e: E): void {
    if ((this.#size + 1) * 4 > this.#slots.length * 3) {
      this.#resize(this.#slots.length * 2);
    }
    const s = this.#slots;
    const mask = s.length - 1;
    for (let i = hash(e.id) & mask;; i = (i + 1) & mask) {
      const old = s[i];
      if (old === undefined) {
        s[i] = e;
        this.#size++;
        return;
      }
      if (old.id === e.id) {
        s[i] = e;
        return;
      }
    }
  }

  /** Removes `e` (that very record); returns whether it was there. */
  delete(e: E): boolean {
    const s = this.#slots;
    const mask = s.length - 1;
    let i = hash(e.id) & mask;
    for (;; i = (i + 1) & mask) {
      const x = s[i];
      if (x === undefined) return false;
      if (x === e) break;
    }
    // Shift back the records after the hole that would no longer be found.
    for (let j = (i + 1) & mask;; j = (j + 1) & mask) {
      const x = s[j];
      if (x === undefined) break;
      const home = hash(x.id) & mask;
      // x may move into the hole at i if its home is not in (i, j].
      if (i <= j ? home <= i || home > j : home <= i && home > j) {
        s[i] = x;
        i = j;
      }
    }
    s[i] = undefined;
    this.#size--;
    if (this.#size * 8 < s.length && s.length > MIN_SLOTS) {
      this.#resize(s.length / 2);
    }
    return true;
  }

  /** Every record, in no particular order. */
  values(): E[] {
    const out: E[] = [];
    for (const e of this.#slots) if (e !== undefined) out.push(e);
    return out;
  }

  #resize(n: number): void {
    const old = this.#slots;
    this.#slots = new Array<E | undefined>(n).fill(undefined);
    this.#size = 0;
    for (const e of old) if (e !== undefined) this.add(e);
  }
}

const MIN_PORT_SLOTS = 8;

/** Where `port` starts its probe in a table of `mask` + 1 slots. */
function home(port: number, mask: number): number {
  return Math.imul(port, 0x9e3779b1) & mask;
}

/**
 * Per port of one host (1–65535): a number (exact up to 2^53, such as an
 * etcd revision), a flag and an optional reference. Open addressing (linear
 * probing, deletion by backward shift) over typed arrays, at most three
 * quarters full: 11 bytes a slot (15 once a reference is set), 15–40 bytes
 * per port kept. Port 0 marks a free slot.
 */
export class PortSlots<R> {
  #ports = new Uint16Array(MIN_PORT_SLOTS);
  #numbers = new Float64Array(MIN_PORT_SLOTS);
  #flags = new Uint8Array(MIN_PORT_SLOTS);
  /** Allocated once a reference is set. */
  #refs: (R | undefined)[] | undefined;
  #size = 0;

  /** The number of ports kept. */
  get size(): number {
    return this.#size;
  }

  /**
   * The slot of `port`, or -1: for the `…At` accessors, until the next
   * `set` or `delete`.
   */
  find(port: number): number {
    return this.#find(port);
  }

  /** The number in slot `i` (from {@linkcode PortSlots.find}). */
  numberAt(i: number): number {
    return this.#numbers[i]!;
  }

  /** The flag in slot `i`. */
  flagAt(i: number): boolean {
    return this.#flags[i] === 1;
  }

  /** The reference in slot `i`. */
  refAt(i: number): R | undefined {
    return this.#refs?.[i];
  }

  /** Changes the reference in slot `i`. */
  setRefAt(i: number, ref: R | undefined): void {
    this.#setRef(i, ref);
  }

  #find(port: number): number {
    const ports = this.#ports;
    const mask = ports.length - 1;
    for (let i = home(port, mask);; i = (i + 1) & mask) {
      const p = ports[i]!;
      if (p === port) return i;
      if (p === 0) return -1;
    }
  }

  /** Whether `port` is kept. */
  has(port: number): boolean {
    return this.#find(port) >= 0;
  }

  /** The number kept for `port`. */
  number(port: number): number | undefined {
    const i = this.#find(port);
    return i < 0 ? undefined : this.#numbers[i];
  }

  /** The flag kept for `port` (false when not kept). */
  flag(port: number): boolean {
    const i = this.#find(port);
    return i >= 0 && this.#flags[i] === 1;
  }

  /** The reference kept for `port`. */
  ref(port: number): R | undefined {
    const i = this.#find(port);
    return i < 0 ? undefined : this.#refs?.[i];
  }

  /** Keeps a number, a flag and a reference for `port` (1–65535). */
  set(port: number, n: number, flag: boolean, ref: R | undefined): void {
    let i = this.#find(port);
    if (i < 0) {
      if ((this.#size + 1) * 4 > this.#ports.length * 3) {
        this.#resize(this.#ports.length * 2);
      }
      i = this.#free(port);
      this.#ports[i] = port;
      this.#size++;
    }
    this.#numbers[i] = n;
    this.#flags[i] = flag ? 1 : 0;
    this.#setRef(i, ref);
  }

  /** Changes the reference of `port`, if kept; returns whether it was. */
  setRef(port: number, ref: R | undefined): boolean {
    const i = this.#find(port);
    if (i < 0) return false;
    this.#setRef(i, ref);
    return true;
  }

  /** Forgets `port`; returns whether it was kept. */
  delete(port: number): boolean {
    let i = this.#find(port);
    if (i < 0) return false;
    const ports = this.#ports;
    const mask = ports.length - 1;
    // Shift back the slots after the hole that would no longer be found.
    for (let j = (i + 1) & mask;; j = (j + 1) & mask) {
      const p = ports[j]!;
      if (p === 0) break;
      const h = home(p, mask);
      // p may move into the hole at i if its home is not in (i, j].
      if (i <= j ? h <= i || h > j : h <= i && h > j) {
        this.#move(j, i);
        i = j;
      }
    }
    ports[i] = 0;
    this.#numbers[i] = 0;
    this.#flags[i] = 0;
    if (this.#refs !== undefined) this.#refs[i] = undefined;
    this.#size--;
    if (this.#size * 8 < ports.length && ports.length > MIN_PORT_SLOTS) {
      this.#resize(ports.length / 2);
    }
    return true;
  }

  /** Every port kept, with its number, in no particular order. */
  entries(): [port: number, n: number][] {
    const out: [number, number][] = [];
    for (let i = 0; i < this.#ports.length; i++) {
      const p = this.#ports[i]!;
      if (p !== 0) out.push([p, this.#numbers[i]!]);
    }
    return out;
  }

  #free(port: number): number {
    const ports = this.#ports;
    const mask = ports.length - 1;
    for (let i = home(port, mask);; i = (i + 1) & mask) {
      if (ports[i] === 0) return i;
    }
  }

  #setRef(i: number, ref: R | undefined): void {
    if (ref === undefined && this.#refs === undefined) return;
    this.#refs ??= new Array<R | undefined>(this.#ports.length).fill(
      undefined,
    );
    this.#refs[i] = ref;
  }

  #move(from: number, to: number): void {
    this.#ports[to] = this.#ports[from]!;
    this.#numbers[to] = this.#numbers[from]!;
    this.#flags[to] = this.#flags[from]!;
    if (this.#refs !== undefined) this.#refs[to] = this.#refs[from];
  }

  #resize(n: number): void {
    const ports = this.#ports;
    const numbers = this.#numbers;
    const flags = this.#flags;
    const refs = this.#refs;
    this.#ports = new Uint16Array(n);
    this.#numbers = new Float64Array(n);
    this.#flags = new Uint8Array(n);
    this.#refs = refs === undefined
      ? undefined
      : new Array<R | undefined>(n).fill(undefined);
    for (let j = 0; j < ports.length; j++) {
      const p = ports[j]!;
      if (p === 0) continue;
      const i = this.#free(p);
      this.#ports[i] = p;
      this.#numbers[i] = numbers[j]!;
      this.#flags[i] = flags[j]!;
      if (refs !== undefined) this.#refs![i] = refs[j];
    }
  }
}
