/**
 * A minimal typed event emitter shared by the server and the client. A
 * listener that throws does not stop the others; its error goes to `onError`.
 *
 * @module
 */

// deno-lint-ignore no-explicit-any
type Listener = (...args: any[]) => void;

/**
 * Calls listeners by event name. Listener lists are replaced, never changed,
 * so an emit iterates the list as it was without copying it.
 */
export class Emitter<Events extends { [K in keyof Events]: Listener }> {
  #listeners = new Map<keyof Events, readonly Listener[]>();
  #onError: (err: unknown) => void;

  constructor(onError: (err: unknown) => void = () => {}) {
    this.#onError = onError;
  }

  /** Adds a listener (once: adding it again changes nothing). */
  on<K extends keyof Events>(event: K, fn: Events[K]): void {
    const list = this.#listeners.get(event) ?? [];
    if (!list.includes(fn)) this.#listeners.set(event, [...list, fn]);
  }

  /** Removes a listener. */
  off<K extends keyof Events>(event: K, fn: Events[K]): void {
    const list = this.#listeners.get(event);
    if (list === undefined || !list.includes(fn)) return;
    const rest = list.filter((f) => f !== fn);
    if (rest.length === 0) this.#listeners.delete(event);
    else this.#listeners.set(event, rest);
  }

  /** How many listeners an event has. */
  count(event: keyof Events): number {
    return this.#listeners.get(event)?.length ?? 0;
  }

  /** Calls every listener of `event`. */
  emit<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>): void {
    const list = this.#listeners.get(event);
    if (list === undefined) return;
    for (const fn of list) {
      try {
        fn(...args);
      } catch (err) {
        this.#onError(err);
      }
    }
  }
}
