/**
 * seaport: a service registry and port assigner for clusters.
 *
 * A server ({@linkcode createServer}, or `seaport 9090` on the command line)
 * assigns ports to roles such as `web@1.2.3` per host and remembers who
 * serves what. Clients ({@linkcode connect}) register services and find them
 * by name and semver range; `get()` waits until a match exists, so start order
 * does not matter. Registrations live as long as the connection that made
 * them, and `service()` re-asserts its port after every reconnect.
 *
 * @example Register a service and find it
 * ```ts
 * import { connect, createServer } from "./mod.ts";
 *
 * const server = createServer();
 * const { port } = await server.listen(0, "127.0.0.1");
 *
 * const ports = connect("127.0.0.1", port);
 * await ports.service("web@1.2.3", (p, ready) => {
 *   // start listening on p, then:
 *   ready();
 * });
 * const [web] = await ports.get("web@1.2.x");
 * console.log(`web is at ${web!.host}:${web!.port}`);
 *
 * await ports.close();
 * await server.close();
 * ```
 *
 * @module
 */
import { type ConnectOptions, connectWith, type Ports } from "./client.ts";
import { createServer } from "./server.ts";

export { createServer } from "./server.ts";
export type { Server, ServerEvents, ServerOptions } from "./server.ts";
export type { EtcdStoreOptions } from "./store/etcd_store.ts";
export type { HttpOptions } from "./http/mod.ts";
export type {
  ConnectOptions,
  EventScope,
  GetOptions,
  Ports,
  PortsEvents,
  QueryOptions,
  ServiceCallback,
} from "./client.ts";
export type {
  JsonValue,
  LostReason,
  Meta,
  PortRange,
  RangeOption,
  ServiceRecord,
} from "./registry.ts";
export { hostPort, parsePattern, parseRole } from "./registry.ts";
export type { Pattern, Role } from "./registry.ts";
export type {
  Addr,
  Conn,
  Endpoint,
  Listener,
  TlsClientOptions,
  TlsServerOptions,
  Transport,
} from "./transport.ts";
export {
  AbortError,
  AuthError,
  ConnectionError,
  ProtocolError,
  RegistryError,
  SeaportError,
  TimeoutError,
} from "./errors.ts";
export type { ErrorCode, RegistryErrorCode } from "./errors.ts";

/**
 * Connects to a seaport server at `port` on localhost, `host` and `port`, or
 * `"host:port"` (`"[::1]:9090"` for IPv6), or to one of several servers of a
 * registry (`"h1:9090,h2:9090"` or `["h1:9090", "h2:9090"]`), with optional
 * options last. Calls made before the connection is up are queued; the client
 * reconnects by itself until `close()`, moving on to the next server of the
 * list (and of those the servers announce) when one fails.
 *
 * @param args The address forms above, then {@linkcode ConnectOptions}.
 * @returns The client.
 * @throws {TypeError} for a malformed address; {RangeError} for a bad port.
 *
 * @example
 * ```ts
 * import { connect, createServer } from "./mod.ts";
 * const server = createServer({ secret: "beep boop" });
 * const { port } = await server.listen(0, "127.0.0.1");
 * const ports = connect(`127.0.0.1:${port}`, { secret: "beep boop" });
 * console.log(await ports.query("web"));  // []
 * await ports.close();
 * await server.close();
 * ```
 */
export function connect(port: number, options?: ConnectOptions): Ports;
/**
 * Connects to a seaport server at `host` and `port`.
 *
 * @param host Host name or address.
 * @param port TCP port.
 * @param options {@linkcode ConnectOptions}.
 * @returns The client.
 *
 * @example
 * ```ts
 * import { connect } from "./mod.ts";
 * const ports = connect("127.0.0.1", 9090, { secret: "beep boop" });
 * await ports.close();
 * ```
 */
export function connect(
  host: string,
  port: number,
  options?: ConnectOptions,
): Ports;
/**
 * Connects to a seaport server at `"host:port"`, `"[::1]:port"` or `"port"`,
 * or to one of several servers of a registry: `"h1:9090,h2:9090"`.
 *
 * @param address The address, or a comma-separated list of addresses.
 * @param options {@linkcode ConnectOptions}.
 * @returns The client.
 *
 * @example
 * ```ts
 * import { connect } from "./mod.ts";
 * const ports = connect("[::1]:9090");
 * await ports.close();
 * ```
 */
export function connect(address: string, options?: ConnectOptions): Ports;
/**
 * Connects to one of several servers of a registry, each `"host:port"`,
 * `"[::1]:port"` or `"port"`: tried in a random order (see
 * {@linkcode ConnectOptions.shuffle}), the next one taken when the connection
 * fails or is lost; registrations are re-asserted on whichever server the
 * client reaches.
 *
 * @param addresses The servers' addresses.
 * @param options {@linkcode ConnectOptions}.
 * @returns The client.
 * @throws {TypeError} naming a malformed address; {RangeError} for a bad port.
 *
 * @example
 * ```ts
 * import { connect, createServer } from "./mod.ts";
 * const a = createServer(), b = createServer();
 * const one = await a.listen(0, "127.0.0.1");
 * const two = await b.listen(0, "127.0.0.1");
 * const ports = connect([`127.0.0.1:${one.port}`, `127.0.0.1:${two.port}`]);
 * console.log(await ports.query("web")); // []
 * await ports.close();
 * await a.close();
 * await b.close();
 * ```
 */
export function connect(
  addresses: readonly string[],
  options?: ConnectOptions,
): Ports;
export function connect(...args: unknown[]): Ports {
  return connectWith(undefined, args);
}

/** What {@linkcode seaport} returns: `connect` and `createServer` in an environment. */
export interface Seaport {
  /** {@linkcode connect} under the environment. */
  connect: typeof connect;
  /** {@linkcode createServer}. */
  createServer: typeof createServer;
}

/**
 * Selects an environment: `seaport("staging").connect(9090)` registers and
 * finds services in `staging` only (unless a query names another).
 *
 * @param env The environment name.
 * @returns `connect` and `createServer` bound to that environment.
 *
 * @example
 * ```ts
 * import { createServer, seaport } from "./mod.ts";
 * const server = createServer();
 * const { port } = await server.listen(0, "127.0.0.1");
 * const ports = seaport("staging").connect("127.0.0.1", port);
 * await ports.service("web@1.0.0");
 * console.log(server.query("web", "staging").length); // 1
 * await ports.close();
 * await server.close();
 * ```
 */
export function seaport(env: string): Seaport {
  if (typeof env !== "string") {
    throw new TypeError("The environment must be a string");
  }
  return {
    connect: ((...args: unknown[]) => connectWith(env, args)) as typeof connect,
    createServer,
  };
}

export default seaport;
