/**
 * A minimal typed event emitter shared by the server and the client. A
 * listener that throws does not stop the others; its error goes to `onError`.
 *
 * @module
 */

// deno-lint-ignore no-explicit-any
type Listener = (...args: any[]) => void;

/** Calls listeners by event name. */
export class Emitter<Events extends { [K in keyof Events]: Listener }> {
  #listeners = new Map<keyof Events, Set<Listener>>();
  #onError: (err: unknown) => void;

  constructor(onError: (err: unknown) => void = () => {}) {
    this.#onError = onError;
  }

  /** Adds a listener. */
  on<K extends keyof Events>(event: K, fn: Events[K]): void {
    let set = this.#listeners.get(event);
    if (set === undefined) this.#listeners.set(event, set = new Set());
    set.add(fn);
  }

  /** Removes a listener. */
  off<K extends keyof Events>(event: K, fn: Events[K]): void {
    this.#listeners.get(event)?.delete(fn);
  }

  /** How many listeners an event has. */
  count(event: keyof Events): number {
    return this.#listeners.get(event)?.size ?? 0;
  }

  /** Calls every listener of `event`. */
  emit<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>): void {
    const set = this.#listeners.get(event);
    if (set === undefined) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        this.#onError(err);
      }
    }
  }
}
