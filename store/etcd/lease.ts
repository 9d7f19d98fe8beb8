/**
 * etcd's Lease service over the JSON gateway. A keep-alive is one POST per
 * refresh: the gateway's keep-alive is a stream, but one request with one
 * answer works and needs no long-lived connection.
 *
 * @module
 */
import { arr, type Header, header, id, int, unb64Text } from "./_codec.ts";
import type { Endpoints } from "./_endpoints.ts";
import { EtcdError, GRPC } from "./_errors.ts";

/** A granted lease. */
export interface LeaseGrant {
  /** The header of the answer. */
  header: Header;
  /** The lease's ID (a 63-bit number, as decimal text). */
  id: string;
  /** The TTL in seconds etcd granted (at least its minimum, 2 s for 3.4). */
  ttl: number;
}

/** What {@linkcode Lease.timeToLive} tells of a lease. */
export interface LeaseTimeToLive {
  /** The header of the answer. */
  header: Header;
  /** Seconds left; -1 when the lease does not exist (expired or revoked). */
  ttl: number;
  /** The TTL it was granted with. */
  grantedTtl: number;
  /** The keys attached to it, if asked for. */
  keys: string[];
}

/** etcd's lease service. */
export interface Lease {
  /**
   * Grants a lease.
   *
   * @param ttl Seconds the lease lives without a keep-alive.
   * @param options An ID to ask for (random when left out).
   * @returns The lease's ID and TTL.
   * @throws {UnavailableError} When no endpoint answers in time.
   */
  grant(ttl: number, options?: { id?: string }): Promise<LeaseGrant>;
  /**
   * Refreshes a lease once.
   *
   * @param id The lease.
   * @returns The TTL it was refreshed to, in seconds.
   * @throws {EtcdError} With `leaseNotFound` when the lease expired or was
   *   revoked.
   * @throws {UnavailableError} When no endpoint answers in time.
   */
  keepAliveOnce(id: string): Promise<{ header: Header; ttl: number }>;
  /**
   * Revokes a lease: every key attached to it is deleted.
   *
   * @param id The lease.
   * @throws {EtcdError} With `leaseNotFound` when there is no such lease.
   */
  revoke(id: string): Promise<{ header: Header }>;
  /**
   * Tells how long a lease has left.
   *
   * @param id The lease.
   * @param options Whether to list the keys attached to it.
   * @returns The TTL left (-1 when the lease does not exist).
   */
  timeToLive(
    id: string,
    options?: { keys?: boolean },
  ): Promise<LeaseTimeToLive>;
  /**
   * Lists every lease.
   *
   * @returns Their IDs.
   */
  leases(): Promise<string[]>;
}

function leaseId(v: string): string {
  if (typeof v !== "string" || !/^[1-9]\d*$/.test(v)) {
    throw new TypeError(`Invalid lease ID "${v}": expected a positive decimal`);
  }
  return v;
}

/** The lease service over `endpoints`. */
export function createLease(endpoints: Endpoints): Lease {
  return {
    async grant(ttl, options = {}) {
      if (!Number.isSafeInteger(ttl) || ttl <= 0) {
        throw new RangeError(
          `A lease TTL must be a positive integer, got ${ttl}`,
        );
      }
      const body: Record<string, unknown> = { TTL: ttl };
      if (options.id !== undefined) body.ID = leaseId(options.id);
      const r = await endpoints.call("/v3/lease/grant", body, {
        idempotent: false,
      });
      if (typeof r.error === "string" && r.error !== "") {
        throw new EtcdError(`etcd refused a lease: ${r.error}`, 0, 200);
      }
      return {
        header: header(r.header),
        id: id(r.ID, "ID"),
        ttl: int(r.TTL, "TTL"),
      };
    },
    async keepAliveOnce(lease) {
      const r = await endpoints.call("/v3/lease/keepalive", {
        ID: leaseId(lease),
      }, { idempotent: true });
      // A stream answer: one `result` per request, or an `error` object.
      if (typeof r.error === "object" && r.error !== null) {
        const e = r.error as { message?: unknown; grpc_code?: unknown };
        throw new EtcdError(
          `etcd refused a keep-alive of lease "${lease}": ${String(e.message)}`,
          typeof e.grpc_code === "number" ? e.grpc_code : 0,
          200,
        );
      }
      const result = (r.result ?? {}) as Record<string, unknown>;
      const ttl = int(result.TTL, "TTL");
      if (ttl <= 0) {
        throw new EtcdError(
          `etcd refused a keep-alive: requested lease not found: "${lease}" expired or was revoked`,
          GRPC.NOT_FOUND,
          200,
        );
      }
      return { header: header(result.header), ttl };
    },
    async revoke(lease) {
      // 3.4 serves both /v3/lease/revoke and /v3/kv/lease/revoke.
      const r = await endpoints.call("/v3/lease/revoke", {
        ID: leaseId(lease),
      }, { idempotent: true });
      return { header: header(r.header) };
    },
    async timeToLive(lease, options = {}) {
      const body: Record<string, unknown> = { ID: leaseId(lease) };
      if (options.keys) body.keys = true;
      const r = await endpoints.call("/v3/lease/timetolive", body, {
        idempotent: true,
      });
      return {
        header: header(r.header),
        ttl: int(r.TTL, "TTL"),
        grantedTtl: int(r.grantedTTL, "grantedTTL"),
        keys: arr(r.keys, "keys").map((k) => unb64Text(k, "keys[]")),
      };
    },
    async leases() {
      const r = await endpoints.call("/v3/lease/leases", {}, {
        idempotent: true,
      });
      return arr(r.leases, "leases").map((l) =>
        id((l as { ID?: unknown }).ID, "leases[].ID")
      );
    },
  };
}
