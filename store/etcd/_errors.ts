/**
 * The error etcd answers with when it refuses a request for a reason other
 * than availability or authentication.
 *
 * @module
 */
import { SeaportError } from "../../errors.ts";

/** gRPC status codes etcd answers with, by name. */
export const GRPC = {
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  FAILED_PRECONDITION: 9,
  OUT_OF_RANGE: 11,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/**
 * etcd refused a request: an invalid argument, a lease that does not exist, a
 * revision that was compacted, and so on. `code` is `STORE`; `grpcCode` and
 * `status` say what etcd answered.
 *
 * @example
 * ```ts
 * import { EtcdError } from "./mod.ts";
 * const err = new EtcdError("etcdserver: requested lease not found", 5, 404);
 * console.log(err.code, err.grpcCode); // "STORE" 5
 * ```
 */
export class EtcdError extends SeaportError {
  /** The gRPC status code etcd answered with (5 not found, 11 compacted…). */
  readonly grpcCode: number;
  /** The HTTP status of the gateway's answer. */
  readonly status: number;
  /**
   * Creates the error.
   *
   * @param message etcd's message, with what was asked.
   * @param grpcCode The gRPC status code.
   * @param status The HTTP status.
   * @param options The `cause`, if any.
   */
  constructor(
    message: string,
    grpcCode: number,
    status: number,
    options?: ErrorOptions,
  ) {
    super("STORE", message, options);
    this.name = "EtcdError";
    this.grpcCode = grpcCode;
    this.status = status;
  }

  /** Whether the revision asked for was compacted away. */
  get compacted(): boolean {
    return this.grpcCode === GRPC.OUT_OF_RANGE &&
      /compacted/.test(this.message);
  }

  /** Whether the lease asked for does not exist (expired or revoked). */
  get leaseNotFound(): boolean {
    return this.grpcCode === GRPC.NOT_FOUND &&
      /lease not found/.test(this.message);
  }
}
