/**
 * The seaport client: connects through the transport to one server of its
 * pool, speaks the wire protocol, keeps a map of pending requests, queues
 * calls while the connection is down, reconnects (to the next server) with
 * capped exponential backoff and full jitter, and re-asserts `service()` and
 * `assume()` registrations after every reconnect.
 *
 * Its parts, one file each: `servers.ts` (the server pool and address
 * forms), `connection.ts` (one connection's life: connect, handshake,
 * heartbeat, reconnect), `requests.ts` (the request pipeline),
 * `registrations.ts` (registrations and their re-assertion),
 * `proposals.ts` (port proposals and the bind probe), `events.ts` (event
 * subscriptions), `client.ts` (the `Ports` they make), `ports.ts` (the public
 * types).
 *
 * @module
 */
export { connectWith } from "./client.ts";
export { parseAddress, parseServers } from "./servers.ts";
export type {
  ConnectOptions,
  EventScope,
  GetOptions,
  Ports,
  PortsEvents,
  QueryOptions,
  ServiceCallback,
} from "./ports.ts";
