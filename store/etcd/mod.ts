/**
 * A small etcd v3 client over etcd's JSON gateway, with `fetch`: it runs on
 * Deno, Node 20 and Bun with no dependency. Shaped like etcd's Go client, it
 * is one {@linkcode EtcdClient} holding small services: {@linkcode KV}
 * (range, put, delete range, txn, compaction), {@linkcode Lease} (grant,
 * keep-alive, revoke, time-to-live) and {@linkcode Watcher} (watch a key or a
 * prefix from a revision). On top of KV, a {@linkcode WriteBatcher} sends the
 * conditional writes of one event-loop turn as one txn.
 *
 * ```ts ignore
 * import { createEtcdClient } from "./store/etcd/mod.ts";
 * await using etcd = createEtcdClient({
 *   endpoints: "http://10.0.0.1:2379,http://10.0.0.2:2379,http://10.0.0.3:2379",
 * });
 * const lease = await etcd.lease.grant(10);
 * const claim = await etcd.kv.txn({
 *   compare: [{ key: "/ports/h1/10000", target: "create", result: "=", value: 0 }],
 *   success: [{ op: "put", key: "/ports/h1/10000", value: "web", lease: lease.id }],
 * });
 * console.log(claim.succeeded);
 * ```
 *
 * ## Requests, failover and errors
 *
 * Every request is a POST to one endpoint, the one that answered last, and
 * settles within `requestTimeout` (default 5 s), failover included.
 *
 * - A refused connection never reached etcd: the request moves on to the
 *   next endpoint, round after round with a short back-off.
 * - A request that is safe to repeat (reads, keep-alives, revokes, opening a
 *   watch) also moves on after a 503 (etcd's "unavailable"), a lost
 *   connection or no answer; it shares its time with the endpoints not yet
 *   tried, so a stopped member leaves time to ask the next one.
 * - A write (put, delete, grant, a txn with writes) is never sent twice: a
 *   503, a connection lost mid-request or no answer in time fails it, so it
 *   takes effect once or fails with an error that says it may have.
 *
 * Past the timeout, or when every endpoint failed, the error is
 * `UnavailableError` (code `UNAVAILABLE`) naming each endpoint tried and why.
 * An endpoint that did not answer in time is asked last by the next request.
 * etcd's other refusals are {@linkcode EtcdError} (code `STORE`, with etcd's
 * `grpcCode`); auth refusals are `AuthError`. A write in flight when the
 * leader dies waits for etcd (no answer until the election is over and
 * beyond), so it fails with `UNAVAILABLE` at the timeout; the next one
 * succeeds once a new leader is elected.
 *
 * With `username` and `password` the client calls `/v3/auth/authenticate`
 * once, sends the token in the `Authorization` header, and authenticates
 * again when etcd says the token is invalid. With `ca`, `https://` endpoints
 * are verified against that CA (Deno: `Deno.createHttpClient`; Bun: `tls.ca`;
 * Node: `node:https` with an `Agent`, as Node's fetch takes no CA).
 *
 * ## Facts of etcd 3.4's gateway (checked against etcd 3.4.23)
 *
 * - Paths: `/v3/kv/range`, `/v3/kv/put`, `/v3/kv/deleterange`, `/v3/kv/txn`,
 *   `/v3/kv/compaction`, `/v3/lease/grant`, `/v3/lease/keepalive`,
 *   `/v3/lease/revoke` (also `/v3/kv/lease/revoke`), `/v3/lease/timetolive`
 *   (also `/v3/kv/lease/timetolive`), `/v3/lease/leases`, `/v3/watch`,
 *   `/v3/maintenance/status`, `/v3/cluster/member/list`, `/v3/auth/*`.
 *   `GET /health` says `{"health":"true"}` when the member has a leader.
 * - int64 fields (revisions, versions, counts, TTLs, IDs) come as strings;
 *   revisions and counts become numbers here, IDs (lease IDs are random
 *   63-bit numbers) stay decimal strings.
 * - Fields with their default value are left out: a failed txn has no
 *   `succeeded`, an absent key no `kvs`, a lease that does not exist answers
 *   a keep-alive with no `TTL` (reported here as `EtcdError` with
 *   `leaseNotFound`), `timetolive` gives `TTL` -1 for it.
 * - Keys and values are base64; here they are UTF-8 strings, and inputs may
 *   be strings or bytes.
 * - A keep-alive is one POST per refresh, answered `{"result": {...}}`: the
 *   gateway's stream form needs no long-lived request.
 * - A txn branch takes at most 128 operations by default (`--max-txn-ops`);
 *   the client checks `maxTxnOps` before sending.
 * - A watch is a chunked answer, a JSON object per line: `created` first; a
 *   PUT event has no `type` field, a DELETE has `"type": "DELETE"`; a
 *   compacted start revision gives `canceled` with `compact_revision` while
 *   the stream stays open (the end "compacted": read the range at revision R
 *   and watch from R + 1); a broken stream ends as "broken" with the last
 *   delivered revision (resume from it + 1). Progress notifications come
 *   every 10 minutes by default, longer than the 300 s after which Node's
 *   fetch cuts an idle body, so a watch quiet for `idleTimeout` (240 s)
 *   reopens itself from the last revision + 1.
 * - Without quorum, a write waits about 7 s and then fails with 503
 *   ("request timed out"); linearizable reads wait too. The client's
 *   `requestTimeout` bounds both.
 *
 * @module
 */
export { createEtcdClient } from "./client.ts";
export type {
  EtcdClient,
  EtcdClientOptions,
  Member,
  MemberStatus,
} from "./client.ts";
export { EtcdError } from "./_errors.ts";
export { AuthError, SeaportError, UnavailableError } from "../../errors.ts";
export type { ErrorCode } from "../../errors.ts";
export type { Bytes, Header, KeyValue } from "./_codec.ts";
export type {
  Compare,
  DeleteOptions,
  DeleteResult,
  GetOptions,
  GetResult,
  KV,
  Op,
  OpResult,
  PutOptions,
  PutResult,
  RangeOptions,
  Txn,
  TxnResult,
} from "./kv.ts";
export type { Lease, LeaseGrant, LeaseTimeToLive } from "./lease.ts";
export { WriteBatcher } from "./batch.ts";
export type { BatchOptions, Write, Written } from "./batch.ts";
export type {
  Watch,
  WatchBatch,
  WatchEnd,
  Watcher,
  WatchEvent,
  WatchOptions,
} from "./watch.ts";
