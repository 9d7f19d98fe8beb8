/**
 * Checks of the client's arguments and the callback forms its calls share.
 *
 * @module
 */
import { parseRole } from "../registry.ts";

export function positive(
  name: string,
  v: number | undefined,
  dflt: number,
): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
    throw new RangeError(
      `Option "${name}" must be a positive number, got ${v}`,
    );
  }
  return v;
}

export function checkRole(role: unknown): void {
  if (typeof role !== "string") {
    throw new TypeError('The role must be a string such as "web@1.2.3"');
  }
  parseRole(role);
}

export function checkMeta(meta: unknown): void {
  if (meta === undefined) return;
  if (typeof meta !== "object" || meta === null || Array.isArray(meta)) {
    throw new TypeError("The metadata must be a plain object");
  }
}

export function checkPort(port: unknown): void {
  if (typeof port !== "number" || !Number.isInteger(port)) {
    throw new TypeError(`The port must be an integer, got ${String(port)}`);
  }
  if (port < 1 || port > 65535) {
    throw new RangeError(`The port must be from 1 to 65535, got ${port}`);
  }
}

/** With a callback, failures go to the `error` event, not unhandled. */
export function handled<T>(
  p: Promise<T>,
  report: (err: unknown) => void,
): Promise<T> {
  p.catch(report);
  return p;
}

/** Calls `cb` with the value, if given; failures then go to `report`. */
export function withCallback<T>(
  promise: Promise<T>,
  cb: ((value: T) => void) | undefined,
  report: (err: unknown) => void,
): Promise<T> {
  if (cb === undefined) return promise;
  promise.then((v) => cb(v), () => {});
  return handled(promise, report);
}
