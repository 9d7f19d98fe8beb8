/**
 * The store seam: the server applies every change to its registrations
 * through a {@linkcode Store}, and answers queries, waiting gets and events
 * from the store's local view, a pure {@linkcode Registry}. The in-memory
 * store is that registry alone, and answers at once (never a Promise); the
 * etcd store writes to etcd first and keeps the view fed by a watch.
 *
 * @module
 */
import type { ChangeResult, RegistrationInput, Registry } from "../registry.ts";

/** What a store knows of one client connection of the server. */
export interface StoreOwner {
  /**
   * The client's session id from its hello (stable across reconnects and
   * servers), or `""` when it sent none.
   */
  readonly sid: string;
}

/** A change, done at once (in-memory) or once the store wrote it (etcd). */
export type Change<T> = ChangeResult<T> | Promise<ChangeResult<T>>;

/**
 * Where the server's registrations live. Every write may answer at once or
 * with a Promise; the server awaits only a Promise, so the in-memory store
 * keeps its synchronous path.
 */
export interface Store<O extends StoreOwner, T> {
  /** The local view: queries, waiting gets, `since` and port proposals. */
  readonly view: Registry<O, T>;
  /** Reserves a port (`ready`: visible at once); the record is `record`. */
  allocate(
    owner: O,
    input: RegistrationInput,
    options: {
      port?: number | undefined;
      exclude?: Iterable<number> | undefined;
      ready?: boolean | undefined;
    },
  ): Change<T>;
  /** Shows a registration the owner holds. */
  ready(owner: O, id: string): Change<T>;
  /** Hides a registration the owner holds, keeping its port. */
  unready(owner: O, id: string): Change<T>;
  /** Registers a port the service already listens on, replacing its holder. */
  assume(
    owner: O,
    input: RegistrationInput,
    port: number,
    options: { ready?: boolean },
  ): Change<T>;
  /** Frees whatever holds a port. */
  evict(host: string, port: number): Change<T>;
  /** Frees a registration the owner holds, by id or by port. */
  free(
    owner: O,
    target: { id: string } | { host: string; port: number },
  ): Change<T>;
  /** Frees everything an owner holds and cancels its waiting gets. */
  drop(owner: O): Change<T>;
  /** How many registrations the owner holds. */
  countOf(owner: O): number;
  /**
   * Starts the store (an etcd store reads the registry and starts its
   * watch); `onChange` hears the changes other servers made. A store that
   * writes elsewhere (etcd) gives it its own writes' events and woken gets
   * too, in the order the changes took effect, before the write's Promise
   * resolves; that change then carries only its record.
   */
  open(onChange: (change: ChangeResult<T>) => void): Promise<void>;
  /** Stops the store. */
  close(): Promise<void>;
}

export { MemoryStore } from "./memory.ts";
