/**
 * Error classes of seaport. Every error carries a stable `code`; errors that
 * cross the wire travel as `{ code, message }` and are rebuilt into the same
 * class on the client by {@linkcode errorFromWire}.
 *
 * @module
 */

/** The stable codes of seaport errors. */
export type ErrorCode =
  | "CONNECTION"
  | "CLOSED"
  | "PROTOCOL"
  | "BAD_REQUEST"
  | "LINE_TOO_LONG"
  | "TIMEOUT"
  | "ABORTED"
  | "AUTH"
  | "INVALID_ROLE"
  | "INVALID_PATTERN"
  | "RANGE_EXHAUSTED"
  | "PORT_TAKEN"
  | "NOT_FOUND"
  | "LIMIT"
  | "LOST"
  | "UNAVAILABLE"
  | "STORE";

/**
 * The base class of every seaport error.
 *
 * @example Telling errors apart by code
 * ```ts
 * import { SeaportError } from "./mod.ts";
 * try {
 *   throw new SeaportError("NOT_FOUND", "no such registration");
 * } catch (err) {
 *   if (err instanceof SeaportError && err.code === "NOT_FOUND") {
 *     console.log("nothing to free");
 *   }
 * }
 * ```
 */
export class SeaportError extends Error {
  /** The stable code of this error. */
  readonly code: ErrorCode;
  /**
   * Creates an error with a code and a message.
   *
   * @param code The stable code.
   * @param message What failed and why.
   * @param options The `cause`, if any.
   */
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = "SeaportError";
  }
}

/**
 * The server could not be reached, or the connection was lost.
 *
 * @example
 * ```ts
 * import { ConnectionError } from "./mod.ts";
 * const err = new ConnectionError("Cannot connect to 127.0.0.1:1");
 * console.log(err.code); // "CONNECTION"
 * ```
 */
export class ConnectionError extends SeaportError {
  /**
   * Creates the error.
   *
   * @param message What failed.
   * @param options The original error as `cause`.
   * @param code `CONNECTION` (default) or `CLOSED` when the client was closed.
   */
  constructor(
    message: string,
    options?: ErrorOptions,
    code: "CONNECTION" | "CLOSED" = "CONNECTION",
  ) {
    super(code, message, options);
    this.name = "ConnectionError";
  }
}

/**
 * A message broke the wire protocol (bad JSON, wrong types, unknown operation,
 * over-long line).
 *
 * @example
 * ```ts
 * import { ProtocolError } from "./mod.ts";
 * const err = new ProtocolError("BAD_REQUEST", '"port" must be an integer');
 * console.log(err.code); // "BAD_REQUEST"
 * ```
 */
export class ProtocolError extends SeaportError {
  /**
   * Creates the error.
   *
   * @param code `PROTOCOL`, `BAD_REQUEST` or `LINE_TOO_LONG`.
   * @param message What was wrong.
   * @param options The `cause`, if any.
   */
  constructor(
    code: "PROTOCOL" | "BAD_REQUEST" | "LINE_TOO_LONG",
    message: string,
    options?: ErrorOptions,
  ) {
    super(code, message, options);
    this.name = "ProtocolError";
  }
}

/**
 * A wait was given up because its `AbortSignal` was aborted; the signal's
 * reason is the `cause`.
 *
 * @example
 * ```ts
 * import { AbortError } from "./mod.ts";
 * const err = new AbortError("get() was aborted", { cause: "shutdown" });
 * console.log(err.code, err.cause); // "ABORTED" "shutdown"
 * ```
 */
export class AbortError extends SeaportError {
  /**
   * Creates the error.
   *
   * @param message What was aborted.
   * @param options The signal's reason as `cause`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super("ABORTED", message, options);
    this.name = "AbortError";
  }
}

/**
 * An operation did not complete in time.
 *
 * @example
 * ```ts
 * import { TimeoutError } from "./mod.ts";
 * console.log(new TimeoutError("get() timed out").code); // "TIMEOUT"
 * ```
 */
export class TimeoutError extends SeaportError {
  /**
   * Creates the error.
   *
   * @param message What timed out.
   * @param options The `cause`, if any.
   */
  constructor(message: string, options?: ErrorOptions) {
    super("TIMEOUT", message, options);
    this.name = "TimeoutError";
  }
}

/**
 * The shared secret was missing or wrong.
 *
 * @example
 * ```ts
 * import { AuthError } from "./mod.ts";
 * console.log(new AuthError("wrong secret").code); // "AUTH"
 * ```
 */
export class AuthError extends SeaportError {
  /**
   * Creates the error.
   *
   * @param message What failed.
   * @param options The `cause`, if any.
   */
  constructor(message: string, options?: ErrorOptions) {
    super("AUTH", message, options);
    this.name = "AuthError";
  }
}

/**
 * The store behind the registry (etcd) is unreachable or has lost its quorum:
 * every endpoint refused the connection, answered 503, or did not answer in
 * time. The message names the endpoints tried. Retrying later may succeed.
 *
 * @example
 * ```ts
 * import { UnavailableError } from "./errors.ts";
 * const err = new UnavailableError("etcd is unavailable: tried http://127.0.0.1:2379");
 * console.log(err.code); // "UNAVAILABLE"
 * ```
 */
export class UnavailableError extends SeaportError {
  /**
   * Creates the error.
   *
   * @param message What was unavailable, naming the endpoints tried.
   * @param options The last endpoint's error as `cause`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super("UNAVAILABLE", message, options);
    this.name = "UnavailableError";
  }
}

/** The codes a {@linkcode RegistryError} can carry. */
export type RegistryErrorCode =
  | "INVALID_ROLE"
  | "INVALID_PATTERN"
  | "RANGE_EXHAUSTED"
  | "PORT_TAKEN"
  | "NOT_FOUND"
  | "LIMIT"
  | "LOST";

/**
 * The registry refused an operation: an invalid role or pattern, an exhausted
 * port range, a port that is taken, a registration that does not exist, or a
 * limit reached; or (`LOST`) a registration this client held was taken away
 * by another's change (an `assume` of its port, an operator's eviction).
 *
 * @example
 * ```ts
 * import { RegistryError } from "./mod.ts";
 * const err = new RegistryError("INVALID_ROLE", 'Invalid role "@1"');
 * console.log(err.code); // "INVALID_ROLE"
 * ```
 */
export class RegistryError extends SeaportError {
  /**
   * Creates the error.
   *
   * @param code One of {@linkcode RegistryErrorCode}.
   * @param message What was refused and why.
   * @param options The `cause`, if any.
   */
  constructor(
    code: RegistryErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(code, message, options);
    this.name = "RegistryError";
  }
}

/** An error as it crosses the wire. */
export interface WireError {
  /** The stable code. */
  code: string;
  /** The message. */
  message: string;
}

const REGISTRY_CODES: ReadonlySet<string> = new Set<RegistryErrorCode>([
  "INVALID_ROLE",
  "INVALID_PATTERN",
  "RANGE_EXHAUSTED",
  "PORT_TAKEN",
  "NOT_FOUND",
  "LIMIT",
  "LOST",
]);

/**
 * Turns an error into its wire form. Errors that are not seaport errors become
 * `PROTOCOL` errors with a generic message, so internals never leak.
 */
export function errorToWire(err: unknown): WireError {
  if (err instanceof SeaportError) {
    return { code: err.code, message: err.message };
  }
  return { code: "PROTOCOL", message: "Internal server error" };
}

/** Rebuilds an error received on the wire into the class it was sent as. */
export function errorFromWire(wire: WireError): SeaportError {
  const { code, message } = wire;
  if (REGISTRY_CODES.has(code)) {
    return new RegistryError(code as RegistryErrorCode, message);
  }
  switch (code) {
    case "AUTH":
      return new AuthError(message);
    case "TIMEOUT":
      return new TimeoutError(message);
    case "ABORTED":
      return new AbortError(message);
    case "UNAVAILABLE":
      return new UnavailableError(message);
    case "CONNECTION":
    case "CLOSED":
      return new ConnectionError(message, undefined, code);
    case "BAD_REQUEST":
    case "LINE_TOO_LONG":
      return new ProtocolError(code, message);
    default:
      return new ProtocolError("PROTOCOL", message);
  }
}
