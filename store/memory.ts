/**
 * The in-memory store: the pure registry itself, every change synchronous.
 *
 * @module
 */
import {
  type ChangeResult,
  type RegistrationInput,
  Registry,
  type RegistryOptions,
} from "../registry.ts";
import type { Store, StoreOwner } from "./mod.ts";

/** The embedded registry of a single server. */
export class MemoryStore<O extends StoreOwner, T> implements Store<O, T> {
  readonly view: Registry<O, T>;

  constructor(options: RegistryOptions) {
    this.view = new Registry<O, T>(options);
  }

  allocate(
    owner: O,
    input: RegistrationInput,
    options: {
      port?: number | undefined;
      exclude?: Iterable<number> | undefined;
      ready?: boolean | undefined;
    },
  ): ChangeResult<T> {
    const record = this.view.allocate(owner, input, options);
    if (options.ready !== true) return { record, events: [], woken: [] };
    return this.view.ready(owner, record.id);
  }

  ready(owner: O, id: string): ChangeResult<T> {
    return this.view.ready(owner, id);
  }

  unready(owner: O, id: string): ChangeResult<T> {
    return this.view.unready(owner, id);
  }

  assume(
    owner: O,
    input: RegistrationInput,
    port: number,
    options: { ready?: boolean },
  ): ChangeResult<T> {
    return this.view.assume(owner, input, port, options);
  }

  evict(host: string, port: number): ChangeResult<T> {
    return this.view.evict(host, port);
  }

  free(
    owner: O,
    target: { id: string } | { host: string; port: number },
  ): ChangeResult<T> {
    return this.view.free(owner, target);
  }

  drop(owner: O): ChangeResult<T> {
    return this.view.dropOwner(owner);
  }

  countOf(owner: O): number {
    return this.view.countOf(owner);
  }

  open(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
