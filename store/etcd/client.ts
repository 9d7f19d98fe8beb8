/**
 * The etcd client: one endpoint pool shared by the KV, Lease and Watch
 * services, plus the cluster's status and members.
 *
 * @module
 */
import { type Header, header, id, int } from "./_codec.ts";
import { Endpoints, parseEndpoints } from "./_endpoints.ts";
import { httpClient } from "./_http.ts";
import { createKV, type KV } from "./kv.ts";
import { createLease, type Lease } from "./lease.ts";
import { createWatcher, type Watcher } from "./watch.ts";

/** Options of {@linkcode createEtcdClient}. */
export interface EtcdClientOptions {
  /**
   * The members' client URLs, `http(s)://host:port`: an array or one
   * comma-separated string. Requests go to the one that answered last and
   * fail over to the next.
   */
  endpoints: string | readonly string[];
  /**
   * Every request settles within this many ms, failover included (default
   * 5000); past it, `UnavailableError`. etcd itself gives up on a write
   * without quorum after about 7 s.
   */
  requestTimeout?: number;
  /** A user to authenticate as (etcd with auth enabled). */
  username?: string;
  /** The user's password. */
  password?: string;
  /** A CA certificate (PEM) to trust for `https://` endpoints. */
  ca?: string;
  /** The most operations a txn branch may carry (default 128, etcd's own). */
  maxTxnOps?: number;
}

/** A member's view of the cluster, from `/v3/maintenance/status`. */
export interface MemberStatus {
  /** The header; `header.memberId` is the member that answered. */
  header: Header;
  /** etcd's version. */
  version: string;
  /** The member ID of the leader it knows ("0": none). */
  leader: string;
  /** The raft index. */
  raftIndex: number;
  /** The raft term. */
  raftTerm: number;
  /** The database size in bytes. */
  dbSize: number;
}

/** A member of the cluster. */
export interface Member {
  /** Its ID. */
  id: string;
  /** Its name. */
  name: string;
  /** Its peer URLs. */
  peerURLs: string[];
  /** Its client URLs. */
  clientURLs: string[];
}

/** An etcd v3 client over the JSON gateway. */
export interface EtcdClient extends AsyncDisposable {
  /** The key-value service. */
  readonly kv: KV;
  /** The lease service. */
  readonly lease: Lease;
  /** The watch service. */
  readonly watcher: Watcher;
  /** The endpoints, normalised. */
  readonly endpoints: readonly string[];
  /**
   * The status of one member.
   *
   * @param endpoint The member to ask (default: any, with failover).
   * @returns Its version, leader and raft state.
   */
  status(endpoint?: string): Promise<MemberStatus>;
  /**
   * The members of the cluster.
   *
   * @returns Their IDs, names and URLs.
   */
  members(): Promise<Member[]>;
  /** Aborts every request and watch in flight; safe to call twice. */
  close(): Promise<void>;
}

/**
 * Creates an etcd client. It connects lazily: nothing is sent until the
 * first request.
 *
 * @param options The endpoints, timeout, credentials and CA.
 * @returns The client.
 * @throws {TypeError} When an endpoint is not an `http(s)://host:port` URL.
 * @throws {RangeError} When a limit is not a positive integer.
 */
export function createEtcdClient(options: EtcdClientOptions): EtcdClient {
  const list = parseEndpoints(options.endpoints);
  const requestTimeout = positive(
    options.requestTimeout,
    5000,
    "requestTimeout",
  );
  const maxTxnOps = positive(options.maxTxnOps, 128, "maxTxnOps");
  if ((options.username === undefined) !== (options.password === undefined)) {
    throw new TypeError('Give both "username" and "password", or neither');
  }
  const http = httpClient(options.ca);
  const pool = new Endpoints({
    endpoints: list,
    requestTimeout,
    http,
    username: options.username,
    password: options.password,
  });
  const watches = new Set<{ close(): Promise<void> }>();
  const watcher = createWatcher(pool);
  const client: EtcdClient = {
    kv: createKV(pool, maxTxnOps),
    lease: createLease(pool),
    watcher: {
      watch(key, o) {
        const w = watcher.watch(key, o);
        watches.add(w);
        w.ended.then(() => watches.delete(w));
        return w;
      },
    },
    endpoints: list,
    async status(endpoint) {
      const p = endpoint === undefined ? pool : new Endpoints({
        endpoints: parseEndpoints([endpoint]),
        requestTimeout,
        http,
        username: options.username,
        password: options.password,
      });
      const r = await p.call("/v3/maintenance/status", {}, {
        idempotent: true,
      });
      return {
        header: header(r.header),
        version: typeof r.version === "string" ? r.version : "",
        leader: id(r.leader, "leader"),
        raftIndex: int(r.raftIndex, "raftIndex"),
        raftTerm: int(r.raftTerm, "raftTerm"),
        dbSize: int(r.dbSize, "dbSize"),
      };
    },
    async members() {
      const r = await pool.call("/v3/cluster/member/list", {}, {
        idempotent: true,
      });
      const members = Array.isArray(r.members) ? r.members : [];
      return members.map((m: Record<string, unknown>) => ({
        id: id(m.ID, "members[].ID"),
        name: typeof m.name === "string" ? m.name : "",
        peerURLs: strings(m.peerURLs),
        clientURLs: strings(m.clientURLs),
      }));
    },
    async close() {
      await Promise.all([...watches].map((w) => w.close()));
      pool.close();
    },
    [Symbol.asyncDispose]() {
      return client.close();
    },
  };
  return client;
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((s) => typeof s === "string") : [];
}

function positive(
  v: number | undefined,
  fallback: number,
  what: string,
): number {
  if (v === undefined) return fallback;
  if (!Number.isSafeInteger(v) || v <= 0) {
    throw new RangeError(`"${what}" must be a positive integer, got ${v}`);
  }
  return v;
}
