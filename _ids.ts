/**
 * A map keyed by request ids, for the requests of one connection waiting for
 * their answer. Ids are non-negative integers that mostly grow by one, and
 * few wait at a time: each goes to a slot of a small table by its low bits,
 * and only an id whose slot is held by an older one that still waits goes
 * to a `Map`. Setting and deleting allocate nothing (a `Map` that an entry
 * enters and leaves at every request rehashes its table every few requests).
 *
 * @module
 */

/** Request ids to values: a small direct table, a `Map` behind it. */
export class IdMap<V> {
  #mask: number;
  /** The id in each slot; -1: empty. Allocated on first use. */
  #keys: number[] | undefined;
  #values: (V | undefined)[] | undefined;
  #more: Map<number, V> | undefined;
  #size = 0;

  /** @param slots The size of the direct table, a power of two. */
  constructor(slots = 16) {
    if (!Number.isInteger(slots) || slots < 1 || (slots & (slots - 1)) !== 0) {
      throw new RangeError(`slots must be a power of two, got ${slots}`);
    }
    this.#mask = slots - 1;
  }

  /** How many entries it holds. */
  get size(): number {
    return this.#size;
  }

  /** The value under `id`, if any. */
  get(id: number): V | undefined {
    const keys = this.#keys;
    if (keys === undefined) return undefined;
    const i = id & this.#mask;
    if (keys[i] === id) return this.#values![i];
    return this.#more?.get(id);
  }

  /** Whether `id` has a value. */
  has(id: number): boolean {
    const keys = this.#keys;
    if (keys === undefined) return false;
    return keys[id & this.#mask] === id || (this.#more?.has(id) ?? false);
  }

  /** Sets the value under `id`. */
  set(id: number, value: V): void {
    const keys = this.#keys ?? this.#init();
    const i = id & this.#mask;
    const k = keys[i];
    if (k === id) {
      this.#values![i] = value;
      return;
    }
    if (k === -1 && !(this.#more?.has(id) ?? false)) {
      keys[i] = id;
      this.#values![i] = value;
      this.#size++;
      return;
    }
    const more = this.#more ??= new Map();
    if (!more.has(id)) this.#size++;
    more.set(id, value);
  }

  /** Removes the value under `id`; whether there was one. */
  delete(id: number): boolean {
    const keys = this.#keys;
    if (keys === undefined) return false;
    const i = id & this.#mask;
    if (keys[i] === id) {
      keys[i] = -1;
      this.#values![i] = undefined;
      this.#size--;
      return true;
    }
    if (this.#more?.delete(id)) {
      this.#size--;
      return true;
    }
    return false;
  }

  /** Every value (the table's, then the others'). */
  values(): V[] {
    const out: V[] = [];
    const keys = this.#keys;
    if (keys === undefined) return out;
    for (let i = 0; i < keys.length; i++) {
      if (keys[i] !== -1) out.push(this.#values![i]!);
    }
    if (this.#more !== undefined) {
      for (const v of this.#more.values()) out.push(v);
    }
    return out;
  }

  /** Removes everything. */
  clear(): void {
    if (this.#keys !== undefined) {
      this.#keys.fill(-1);
      this.#values!.fill(undefined);
    }
    this.#more = undefined;
    this.#size = 0;
  }

  #init(): number[] {
    const n = this.#mask + 1;
    this.#values = new Array<V | undefined>(n).fill(undefined);
    return this.#keys = new Array<number>(n).fill(-1);
  }
}
