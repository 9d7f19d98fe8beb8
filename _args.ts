/**
 * The command line's grammar: one table of commands and options from which
 * the parser, the help texts and the shell completions are all made. Parses
 * `seaport` arguments (seed order such as `HOST:PORT query NAME` and verb
 * first such as `query HOST:PORT NAME`) into a checked {@linkcode Parsed}
 * command. Private to the CLI.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseAddress } from "./client.ts";
import { type Meta, parsePattern, parseRole } from "./mod.ts";
import {
  DEFAULT_CHECK,
  type HealthCheck,
  type RestartPolicy,
} from "./_supervisor.ts";
import { VERSION } from "./version.ts";

/** The commands, after aliases (`register` is `service`). */
export type Command =
  | "listen"
  | "show"
  | "query"
  | "get"
  | "service"
  | "assume"
  | "free"
  | "watch"
  | "completion";

/** How long `show`, `query`, `free` and `watch` try to reach the server. */
export const DEFAULT_TIMEOUT = 3000;

interface OptionSpec {
  /** The value's placeholder; none for a flag. */
  readonly arg?: string;
  /** One line of help. */
  readonly help: string;
  /** Values it takes, for completion. */
  readonly values?: readonly string[];
}

const OPTIONS = {
  secret: {
    arg: "S",
    help: "the shared secret (better: --secret-file or $SEAPORT_SECRET)",
  },
  "secret-file": { arg: "PATH", help: "read the shared secret from PATH" },
  env: { arg: "E", help: 'the environment (default: the default one, "")' },
  "all-envs": { help: "every environment" },
  timeout: { arg: "MS", help: "" }, // help given per command
  json: { help: "print JSON even at a terminal" },
  records: { help: "print the whole records, not host:port" },
  host: { arg: "H", help: "the address to bind (default: every address)" },
  range: {
    arg: "LO-HI",
    help: "assign ports from LO to HI (default: 10000-20000)",
  },
  "reuse-delay": {
    arg: "MS",
    help:
      "pass a freed port over for MS (default: 5000): a client whose\nconnection dropped finds its ports free when it is back",
  },
  tls: { help: "use TLS (a client with the system's CA roots)" },
  cert: { arg: "FILE", help: "serve TLS with this certificate chain (PEM)" },
  key: { arg: "FILE", help: "the private key of --cert (PEM)" },
  http: {
    arg: "PORT",
    help: "also serve the HTTP API, metrics and web view on PORT",
  },
  "http-token": {
    arg: "T",
    help:
      "the read-only token HTTP requests must carry (default:\n$SEAPORT_HTTP_TOKEN); required with a secret",
  },
  ca: {
    arg: "FILE",
    help: "connect with TLS, trusting the CA certificates in FILE",
  },
  etcd: {
    arg: "URLS",
    help:
      "keep the registry in etcd at URLS (comma-separated, default:\n$SEAPORT_ETCD): several servers, one registry",
  },
  "etcd-prefix": {
    arg: "P",
    help: "the registry's key prefix in etcd (default: /seaport/)",
  },
  "etcd-user": {
    arg: "USER",
    help: "authenticate to etcd as USER (password: $SEAPORT_ETCD_PASSWORD)",
  },
  "etcd-password-file": {
    arg: "PATH",
    help: "read the etcd user's password from PATH",
  },
  "etcd-ca": {
    arg: "FILE",
    help: "trust the CA certificates in FILE for https:// etcd URLs",
  },
  "etcd-lease-ttl": {
    arg: "S",
    help: "seconds a dead server's registrations outlive it (default: 10)",
  },
  "etcd-address": {
    arg: "HOST:PORT",
    help:
      "where clients reach this server, told to the registry's other\nservers and their clients (default: --host, else this machine's name)",
  },
  restart: {
    arg: "POLICY",
    help: "always, on-failure or never (default: always)",
    values: ["always", "on-failure", "never"],
  },
  "max-restarts": {
    arg: "N",
    help: "give up after N restarts within --restart-window",
  },
  "restart-window": {
    arg: "MS",
    help: "the window of --max-restarts (default: 60000)",
  },
  "check-interval": {
    arg: "MS",
    help:
      `check the running command every MS (default: ${DEFAULT_CHECK.interval})`,
  },
  "check-timeout": {
    arg: "MS",
    help: `how long one check may take (default: ${DEFAULT_CHECK.timeout})`,
  },
  "check-failures": {
    arg: "N",
    help:
      `failed checks in a row that make it not ready (default: ${DEFAULT_CHECK.failures})`,
  },
  "check-http": {
    arg: "PATH",
    help: "check with GET http://127.0.0.1:PORT/PATH (2xx: healthy)",
  },
  "check-cmd": {
    arg: "CMD",
    help: "check by running the shell command CMD (exit 0: healthy)",
  },
  grace: {
    arg: "MS",
    help: "time the command has to exit when stopped (default: 10000)",
  },
  "meta.KEY": {
    arg: "VALUE",
    help: "an extra field of the registration (a string)",
  },
} as const satisfies Record<string, OptionSpec>;

type OptionName = keyof typeof OPTIONS;

interface CommandSpec {
  /** The arguments after the command (and after the address for clients). */
  readonly args: readonly string[];
  /** Trailing arguments that may be left out. */
  readonly optional?: number;
  /** What it does, for `--help`. */
  readonly about: string;
  readonly options: readonly OptionName[];
  /** The help of `--timeout`, where it applies. */
  readonly timeout?: string;
  readonly examples: readonly string[];
  /** Takes `-- COMMAND [ARGS…]`. */
  readonly exec?: boolean;
}

const CLIENT: readonly OptionName[] = [
  "secret",
  "secret-file",
  "tls",
  "ca",
];
const REACH =
  `how long to try to reach the server (default: ${DEFAULT_TIMEOUT})`;

const COMMANDS: Record<Command, CommandSpec> = {
  listen: {
    args: ["PORT"],
    about: `Runs a seaport server on PORT (0 picks a free one) and prints
"seaport listening on :PORT" (HOST:PORT with --host). Stops cleanly on SIGINT
and SIGTERM.`,
    options: [
      "secret",
      "secret-file",
      "host",
      "range",
      "reuse-delay",
      "cert",
      "key",
      "http",
      "http-token",
      "etcd",
      "etcd-prefix",
      "etcd-user",
      "etcd-password-file",
      "etcd-ca",
      "etcd-lease-ttl",
      "etcd-address",
    ],
    examples: [
      "seaport 9090",
      "SEAPORT_SECRET=beep seaport 9090 --host 10.0.0.1 --range 20000-21000",
      "seaport 9090 --cert server.pem --key server-key.pem",
      "SEAPORT_HTTP_TOKEN=look seaport 9090 --secret-file s --http 9091",
      "seaport 9090 --secret-file s --etcd http://10.0.0.1:2379,http://10.0.0.2:2379",
    ],
  },
  show: {
    args: ["HOST:PORT", "PATTERN"],
    optional: 1,
    about:
      `Prints the port map of the server at HOST:PORT: every registration of every
environment (of --env E only, when given), or those matching PATTERN. A table
at a terminal, a JSON array of records when piped or with --json.`,
    options: ["env", "json", "timeout", ...CLIENT],
    timeout: REACH,
    examples: [
      "seaport localhost:9090 show",
      "seaport localhost:9090 show web@1.x --env prod",
      "seaport show localhost:9090 --json | jq '.[].port'",
    ],
  },
  query: {
    args: ["HOST:PORT", "PATTERN"],
    about:
      `Prints a JSON array of the "host:port" strings of the services matching
PATTERN (NAME or NAME@RANGE, with semver ranges such as 1.2.x, ^2 or >=1.4),
or of their records with --records.`,
    options: ["env", "all-envs", "records", "timeout", ...CLIENT],
    timeout: REACH,
    examples: [
      "seaport localhost:9090 query web@1.2.x",
      "seaport localhost:9090 query 'db@>=2' --records --env prod",
    ],
  },
  get: {
    args: ["HOST:PORT", "PATTERN"],
    about:
      `Waits until a service matches PATTERN, then prints like query. Exits 1 when
--timeout runs out first.`,
    options: ["env", "records", "timeout", ...CLIENT],
    timeout: "give up after MS (default: wait as long as it takes)",
    examples: [
      "seaport localhost:9090 get db@2 --timeout 30000",
      'curl "http://$(seaport localhost:9090 get web | jq -r ".[0]")/"',
    ],
  },
  service: {
    args: ["HOST:PORT", "NAME@VERSION"],
    about:
      `Gets a port for NAME@VERSION and runs COMMAND with the port as its last
argument and in $PORT. The service is listed once COMMAND accepts TCP
connections on the port, and hidden (its port kept) whenever COMMAND exits or
fails its health check, until it is up again. COMMAND is restarted on the same
port by --restart. SIGINT and SIGTERM are passed on to COMMAND; the port is
freed when it has exited (a second signal kills it at once).`,
    options: [
      "env",
      "meta.KEY",
      "timeout",
      "restart",
      "max-restarts",
      "restart-window",
      "check-interval",
      "check-timeout",
      "check-failures",
      "check-http",
      "check-cmd",
      "grace",
      ...CLIENT,
    ],
    timeout: "give up when the server is not reached within MS at start\n" +
      "(default: keep trying, saying so every 5 s)",
    exec: true,
    examples: [
      "seaport localhost:9090 service web@1.2.3 -- node server.js",
      "seaport localhost:9090 service api@2.0.0 --check-http /healthz \\\n" +
      "    --restart on-failure --max-restarts 5 -- ./api --port",
    ],
  },
  assume: {
    args: ["HOST:PORT", "NAME@VERSION", "PORT"],
    about:
      `Registers NAME@VERSION on PORT of this host, for a service that is already
running and that seaport did not start, for as long as this command runs
(until SIGINT or SIGTERM). Re-registers after every reconnect.`,
    options: ["env", "meta.KEY", "timeout", ...CLIENT],
    timeout: "give up when the server is not reached within MS at start\n" +
      "(default: keep trying)",
    examples: ["seaport localhost:9090 assume redis@7.2.0 6379 &"],
  },
  free: {
    args: ["HOST:PORT", "SERVICE"],
    about:
      `Frees the registration holding SERVICE (HOST:PORT of the service, or PORT
on the host the server sees this command come from), whoever holds it. A
connected holder is not told.`,
    options: ["timeout", ...CLIENT],
    timeout: REACH,
    examples: ["seaport localhost:9090 free 10.0.0.5:10003"],
  },
  watch: {
    args: ["HOST:PORT"],
    about:
      `Prints every allocate, assume and free event of the --env environment (the
default one, "", without it; every one with --all-envs), a line each with a
timestamp: text at a terminal, a JSON object per line when piped or with
--json. After a reconnect it prints a "resync" line and what changed while
it was away.`,
    options: ["env", "all-envs", "json", "timeout", ...CLIENT],
    timeout: REACH,
    examples: [
      "seaport localhost:9090 watch --all-envs",
      "seaport localhost:9090 watch --json | jq -c 'select(.type==\"free\")'",
    ],
  },
  completion: {
    args: ["SHELL"],
    about: `Prints a completion script for SHELL (bash or zsh).`,
    options: [],
    examples: [
      "source <(seaport completion bash)     # in ~/.bashrc",
      'seaport completion zsh > "${fpath[1]}/_seaport"',
    ],
  },
};

const VERBS = new Map<string, Command | "help">([
  ...Object.keys(COMMANDS).map((c) => [c, c as Command] as const),
  ["register", "service"],
  ["help", "help"],
]);

/** Commands that talk to a server: their first argument is its address. */
const CLIENTS = new Set<Command>([
  "show",
  "query",
  "get",
  "service",
  "assume",
  "free",
  "watch",
]);

const TRAILER = `  -h, --help            show this help
  -v, --version         show the version

Exit codes: 0 success, 1 failure, 2 bad usage.`;

function synopsis(command: Command): string {
  const spec = COMMANDS[command];
  const args = spec.args.map((a, i) =>
    i >= spec.args.length - (spec.optional ?? 0) ? `[${a}]` : a
  );
  const exec = spec.exec ? " -- COMMAND [ARGS...]" : "";
  if (command === "listen") return `seaport PORT [OPTIONS]`;
  if (!CLIENTS.has(command)) {
    return `seaport ${command} ${args.join(" ")}`;
  }
  const [address, ...rest] = args;
  return `seaport ${address} ${command} ${rest.join(" ")} [OPTIONS]${exec}`
    .replace("  ", " ");
}

/** The usage of one command, or of every command. */
export function usage(command?: Command): string {
  if (command !== undefined) {
    return `Usage: ${
      synopsis(command)
    }\nRun "seaport ${command} --help" for more.`;
  }
  const lines = (Object.keys(COMMANDS) as Command[]).map(synopsis);
  return `Usage: ${lines.join("\n       ")}
       (the command may also come first: seaport query HOST:PORT PATTERN)
Run "seaport COMMAND --help" for more.`;
}

/** Bad usage: reported with the usage of the command and exit code 2. */
export class UsageError extends Error {
  constructor(message: string, readonly command?: Command) {
    super(message);
    this.name = "UsageError";
  }
}

/** The `--etcd-*` options of `listen`. */
export interface EtcdArgs {
  endpoints: string;
  prefix: string | undefined;
  username: string | undefined;
  /** `$SEAPORT_ETCD_PASSWORD`, unless `passwordFile` is given. */
  password: string | undefined;
  passwordFile: string | undefined;
  ca: string | undefined;
  leaseTtl: number | undefined;
  /** `--etcd-address`: where clients reach this server. */
  address: string | undefined;
}

/** A checked command line. */
export interface Parsed {
  command: Command;
  /** The server's address, for the commands that talk to one. */
  address: string;
  /** The role (`service`, `assume`) or the pattern (`show`, `query`, `get`). */
  role: string | undefined;
  /** `free`'s service address; `completion`'s shell. */
  target: string;
  /** `listen`'s port; `assume`'s port. */
  port: number;
  secret: string | undefined;
  secretFile: string | undefined;
  env: string;
  /** `--env` was given. */
  envGiven: boolean;
  allEnvs: boolean;
  json: boolean;
  records: boolean;
  host: string | undefined;
  range: [number, number] | undefined;
  /** `--reuse-delay`, in ms. */
  reuseDelay: number | undefined;
  /** `--http`: the HTTP side's port. */
  httpPort: number | undefined;
  /** `--http-token` or `$SEAPORT_HTTP_TOKEN`. */
  httpToken: string | undefined;
  /** `--etcd` or `$SEAPORT_ETCD`, with the other `--etcd-*` options. */
  etcd: EtcdArgs | undefined;
  /** Milliseconds; `undefined` waits as long as it takes. */
  timeout: number | undefined;
  tls: boolean;
  cert: string | undefined;
  key: string | undefined;
  ca: string | undefined;
  meta: Meta;
  exec: string[];
  restart: RestartPolicy;
  maxRestarts: number | undefined;
  restartWindow: number;
  check: HealthCheck;
  grace: number;
}

const RESERVED = new Set(["host", "port", "role", "version", "env", "id"]);
const MAX_MS = 2 ** 31 - 1;

/** Parses the arguments into a command, or into text to print (help). */
export function parse(
  args: string[],
  env: Readonly<Record<string, string | undefined>>,
  runtime = "",
): Parsed | string {
  // `deno task start -- 9090` passes its "--" on
  if (args[0] === "--") args = args.slice(1);
  const dash = args.indexOf("--");
  const head = dash < 0 ? args : args.slice(0, dash);
  const exec = dash < 0 ? [] : args.slice(dash + 1);
  const specs: Record<string, { type: "string" | "boolean"; short?: string }> =
    {
      help: { type: "boolean", short: "h" },
      version: { type: "boolean", short: "v" },
    };
  for (const [name, spec] of Object.entries(OPTIONS)) {
    if (name !== "meta.KEY") {
      specs[name] = { type: "arg" in spec ? "string" : "boolean" };
    }
  }
  const { tokens } = parseArgs({
    args: head,
    allowPositionals: true,
    strict: false,
    tokens: true,
    options: specs,
  });
  const words: string[] = [];
  const opts = new Map<string, string>();
  const meta: Meta = {};
  let problem: string | undefined; // reported once the command is known
  for (const t of tokens) {
    if (t.kind === "positional") words.push(t.value);
    if (t.kind !== "option") continue;
    const spec = (OPTIONS as Record<string, OptionSpec>)[t.name];
    if (t.name.startsWith("meta.")) {
      const key = t.name.slice(5);
      if (key === "" || t.value === undefined) {
        problem ??= `Expected --meta.KEY=VALUE, got "${t.rawName}"`;
      } else if (RESERVED.has(key)) {
        problem ??= `--meta cannot set the reserved field "${key}"`;
      } else meta[key] = t.value;
      opts.set("meta.KEY", "");
    } else if (t.name === "help" || t.name === "version") {
      if (t.inlineValue) problem ??= `${t.rawName} takes no value`;
      opts.set(t.name, "");
    } else if (spec === undefined) {
      problem ??= `Unknown option "${t.rawName}"`;
    } else if (spec.arg === undefined) {
      if (t.inlineValue) problem ??= `${t.rawName} takes no value`;
      opts.set(t.name, "");
    } else if (t.value === undefined || (t.value === "" && t.name !== "env")) {
      problem ??= `Option "${t.rawName}" needs a value`;
    } else opts.set(t.name, t.value);
  }
  if (opts.has("version")) {
    return `seaport ${VERSION}${runtime === "" ? "" : ` (${runtime})`}`;
  }

  let command: Command | "help" | undefined;
  let rest: string[];
  try {
    [command, rest] = resolve(words, opts.has("help"));
  } catch (err) {
    // `seaport 0 --bogus value`: the option is the mistake, not "value"
    throw problem !== undefined ? new UsageError(problem) : err;
  }
  if (command === "help") return rest[0] ? help(rest[0]) : overview();
  if (opts.has("help")) return command ? help(command) : overview();
  if (command === undefined) {
    throw new UsageError(problem ?? "Missing a command");
  }

  const spec = COMMANDS[command];
  const fail = (msg: string) => new UsageError(msg, command);
  if (problem !== undefined) throw fail(problem);
  for (const name of opts.keys()) {
    if (!(spec.options as readonly string[]).includes(name)) {
      const shown = name === "meta.KEY" ? "--meta.KEY=VALUE" : `--${name}`;
      throw fail(`Option "${shown}" does not apply to "${command}"`);
    }
  }
  if (!spec.exec && dash >= 0) {
    throw fail(`"--" and a command only apply to "service"`);
  }
  const needed = spec.args.length - (spec.optional ?? 0);
  if (rest.length < needed || rest.length > spec.args.length) {
    throw fail(
      rest.length < needed
        ? `Missing arguments for "${command}": expected ${
          spec.args.slice(rest.length, needed).join(" ")
        }`
        : `Unexpected argument "${rest[spec.args.length]}"`,
    );
  }
  const int = (name: string, min: number, max = MAX_MS) => {
    const v = opts.get(name);
    return v === undefined
      ? undefined
      : integer(v, `--${name}`, min, max, command);
  };
  const parsed: Parsed = {
    command,
    address: CLIENTS.has(command) ? rest[0]! : "",
    role: undefined,
    target: "",
    port: 0,
    secret: opts.get("secret"),
    secretFile: opts.get("secret-file"),
    env: opts.get("env") ?? "",
    envGiven: opts.has("env"),
    allEnvs: opts.has("all-envs"),
    json: opts.has("json"),
    records: opts.has("records"),
    host: opts.get("host"),
    range: undefined,
    reuseDelay: undefined,
    httpPort: undefined,
    httpToken: undefined,
    etcd: undefined,
    timeout: int("timeout", 1),
    tls: opts.has("tls") || opts.has("ca") || opts.has("cert"),
    cert: opts.get("cert"),
    key: opts.get("key"),
    ca: opts.get("ca"),
    meta,
    exec,
    restart: "always",
    maxRestarts: int("max-restarts", 0),
    restartWindow: int("restart-window", 1) ?? 60_000,
    check: {
      interval: int("check-interval", 1) ?? DEFAULT_CHECK.interval,
      timeout: int("check-timeout", 1) ?? DEFAULT_CHECK.timeout,
      failures: int("check-failures", 1, 1000) ?? DEFAULT_CHECK.failures,
      http: opts.get("check-http"),
      cmd: opts.get("check-cmd"),
    },
    grace: int("grace", 0) ?? 10_000,
  };
  if (parsed.secret !== undefined && parsed.secretFile !== undefined) {
    throw fail(`Give the secret once: --secret or --secret-file, not both`);
  }
  if (parsed.secret === undefined && parsed.secretFile === undefined) {
    parsed.secret = env.SEAPORT_SECRET || undefined;
  }
  if (parsed.envGiven && parsed.allEnvs) {
    throw fail(`Give --env E or --all-envs, not both`);
  }
  if (parsed.check.http !== undefined && parsed.check.cmd !== undefined) {
    throw fail(`Give --check-http or --check-cmd, not both`);
  }
  if ((parsed.cert === undefined) !== (parsed.key === undefined)) {
    throw fail(`--cert and --key go together`);
  }
  const restart = opts.get("restart");
  if (restart !== undefined) {
    if (!OPTIONS.restart.values.includes(restart as RestartPolicy)) {
      throw fail(
        `Invalid --restart "${restart}": expected always, on-failure or never`,
      );
    }
    parsed.restart = restart as RestartPolicy;
  }
  switch (command) {
    case "listen": {
      parsed.port = integer(rest[0]!, "port", 0, 65535, command);
      const range = opts.get("range");
      if (range !== undefined) {
        const m = /^(\d+)-(\d+)$/.exec(range);
        const lo = Number(m?.[1]), hi = Number(m?.[2]);
        if (!m || lo < 1 || hi > 65535 || lo > hi) {
          throw fail(
            `Invalid range "${range}": expected LO-HI with 1 <= LO <= HI <= 65535`,
          );
        }
        parsed.range = [lo, hi];
      }
      parsed.reuseDelay = int("reuse-delay", 0);
      const http = opts.get("http");
      if (http !== undefined) {
        parsed.httpPort = integer(http, "--http port", 0, 65535, command);
        parsed.httpToken = opts.get("http-token") ??
          (env.SEAPORT_HTTP_TOKEN || undefined);
        const secret = parsed.secret !== undefined ||
          parsed.secretFile !== undefined;
        if (secret && parsed.httpToken === undefined) {
          throw fail(
            `--http with a secret needs --http-token T (or $SEAPORT_HTTP_TOKEN): a read-only token for HTTP, never the secret`,
          );
        }
      } else if (opts.has("http-token")) {
        throw fail(`--http-token only applies with --http PORT`);
      }
      const endpoints = opts.get("etcd") ?? (env.SEAPORT_ETCD || undefined);
      if (endpoints !== undefined) {
        const bad = endpoints.split(",").find((u) =>
          !/^https?:\/\/[^/\s]+$/.test(u.trim().replace(/\/$/, ""))
        );
        if (bad !== undefined) {
          throw fail(
            `Invalid etcd URL "${bad}": expected http(s)://HOST:PORT, comma-separated`,
          );
        }
        const user = opts.get("etcd-user");
        const passwordFile = opts.get("etcd-password-file");
        const password = env.SEAPORT_ETCD_PASSWORD || undefined;
        if (user === undefined && (passwordFile ?? password) !== undefined) {
          throw fail(`An etcd password needs --etcd-user USER`);
        }
        if (user !== undefined && (passwordFile ?? password) === undefined) {
          throw fail(
            `--etcd-user needs a password: $SEAPORT_ETCD_PASSWORD or --etcd-password-file PATH`,
          );
        }
        parsed.etcd = {
          endpoints,
          prefix: opts.get("etcd-prefix"),
          username: user,
          password,
          passwordFile,
          ca: opts.get("etcd-ca"),
          leaseTtl: int("etcd-lease-ttl", 1),
          address: opts.get("etcd-address"),
        };
        const address = opts.get("etcd-address");
        if (address !== undefined) {
          try {
            parseAddress([address]);
          } catch (err) {
            throw fail(`Invalid --etcd-address: ${(err as Error).message}`);
          }
        }
      } else {
        const stray = [
          "etcd-prefix",
          "etcd-user",
          "etcd-password-file",
          "etcd-ca",
          "etcd-lease-ttl",
          "etcd-address",
        ].find((o) => opts.has(o));
        if (stray !== undefined) {
          throw fail(`--${stray} only applies with --etcd URLS`);
        }
      }
      return parsed;
    }
    case "completion":
      if (rest[0] !== "bash" && rest[0] !== "zsh") {
        throw fail(`Unknown shell "${rest[0]}": expected bash or zsh`);
      }
      parsed.target = rest[0];
      return parsed;
  }
  try {
    parseAddress([parsed.address]);
    const second = rest[1];
    if (command === "service" || command === "assume") parseRole(second!);
    else if (second !== undefined && command !== "free") parsePattern(second);
    if (command === "free") parsed.target = second!;
    else parsed.role = second;
  } catch (err) {
    throw fail(err instanceof Error ? err.message : String(err));
  }
  if (command === "assume") {
    parsed.port = integer(rest[2]!, "port", 1, 65535, command);
  }
  if (command === "free") parseService(parsed.target, command);
  if (command === "service" && exec.length === 0) {
    throw fail(`Missing the command to run after "--"`);
  }
  if (parsed.timeout === undefined && spec.timeout === REACH) {
    parsed.timeout = DEFAULT_TIMEOUT;
  }
  return parsed;
}

/** `free`'s SERVICE: `HOST:PORT`, `[V6]:PORT` or `PORT`. */
export function parseService(
  s: string,
  command: Command = "free",
): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(s);
  if (m === null) {
    return {
      host: undefined,
      port: integer(s, "service port", 1, 65535, command),
    };
  }
  return {
    host: m[1] ?? m[2],
    port: integer(m[3]!, "service port", 1, 65535, command),
  };
}

/** Finds the command in seed order (`ADDR show`) or verb first (`show ADDR`). */
function resolve(
  words: string[],
  helping: boolean,
): [Command | "help" | undefined, string[]] {
  const [first, second] = words;
  if (first === undefined) return [undefined, []];
  const verb = VERBS.get(first);
  if (verb !== undefined) return [verb, words.slice(1)];
  if (second !== undefined) {
    const v = VERBS.get(second);
    if (v !== undefined && v !== "help" && CLIENTS.has(v)) {
      return [v, [first, ...words.slice(2)]];
    }
    if (/^\d+$/.test(first)) {
      throw new UsageError(`Unexpected argument "${second}"`, "listen");
    }
    throw new UsageError(`Unknown command "${second}"`);
  }
  if (/^\d+$/.test(first)) return ["listen", words];
  if (helping) return [undefined, []];
  throw new UsageError(
    first.includes(":")
      ? `Missing a command after "${first}": ${[...CLIENTS].join(", ")}`
      : `Unknown command "${first}"`,
  );
}

function overview(): string {
  return `seaport ${VERSION}: service registry and port assignment.

${usage()}

${TRAILER}`;
}

/** The option lines of a command's help, aligned. */
function optionLines(command: Command): string[] {
  const spec = COMMANDS[command];
  const rows = spec.options.map((name) => {
    const o: OptionSpec = OPTIONS[name];
    const left = name === "meta.KEY"
      ? "--meta.KEY=VALUE"
      : `--${name}${o.arg === undefined ? "" : ` ${o.arg}`}`;
    const text = name === "timeout" ? spec.timeout ?? "" : o.help;
    return [left, text] as const;
  });
  const width = Math.max(20, ...rows.map(([left]) => left.length + 2));
  const pad = " ".repeat(width + 2);
  return rows.map(([left, text]) =>
    `  ${left.padEnd(width)}${text.split("\n").join(`\n${pad}`)}`
  );
}

function help(name: string): string {
  const verb = VERBS.get(name);
  if (verb === undefined || verb === "help") {
    throw new UsageError(`Unknown command "${name}"`);
  }
  const spec = COMMANDS[verb];
  const options = optionLines(verb);
  return `Usage: ${synopsis(verb)}

${spec.about}
${options.length > 0 ? `\nOptions:\n${options.join("\n")}\n` : ""}
Examples:
${spec.examples.map((e) => `  ${e}`).join("\n")}

${TRAILER}`;
}

function integer(
  s: string,
  what: string,
  min: number,
  max: number,
  command: Command,
): number {
  const n = Number(s);
  if (!/^\d+$/.test(s) || n < min || n > max) {
    throw new UsageError(
      `Invalid ${what} "${s}": expected an integer from ${min} to ${max}`,
      command,
    );
  }
  return n;
}

/**
 * A completion script for bash or zsh, made from the same tables the parser
 * reads.
 */
export function completion(shell: "bash" | "zsh"): string {
  const verbs = [...VERBS.keys()].filter((v) => v !== "help");
  const optionsOf = (c: Command) =>
    COMMANDS[c].options.filter((o) => o !== "meta.KEY").map((o) => `--${o}`)
      .concat(COMMANDS[c].options.includes("meta.KEY") ? ["--meta."] : [])
      .concat(["--help"]);
  const cases = (Object.keys(COMMANDS) as Command[]).map((c) => {
    const names = c === "service" ? "service|register" : c;
    return `    ${names}) opts="${optionsOf(c).join(" ")}" ;;`;
  }).join("\n");
  const withValues = Object.entries(OPTIONS).filter(([, o]) =>
    "values" in o
  ) as [string, OptionSpec][];
  const valueCases = withValues.map(([n, o]) =>
    `    --${n}) COMPREPLY=($(compgen -W "${
      o.values!.join(" ")
    }" -- "$cur")); return ;;`
  ).join("\n");
  const fileOpts = Object.entries(OPTIONS).filter(([, o]) =>
    "arg" in o && (o.arg === "FILE" || o.arg === "PATH")
  ).map(([n]) => `--${n}`).join("|");
  const bash = `# bash completion for seaport ${VERSION}
_seaport() {
  local cur prev cmd="" w opts
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  for w in "\${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
    case "$w" in
      --) return ;;
      ${verbs.join("|")}) cmd="$w" ;;
    esac
  done
  case "$prev" in
${valueCases}
    ${fileOpts}) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  if [[ -z "$cmd" ]]; then
    if [[ "$prev" == completion ]]; then
      COMPREPLY=($(compgen -W "bash zsh" -- "$cur")); return
    fi
    COMPREPLY=($(compgen -W "${verbs.join(" ")} --help --version" -- "$cur"))
    return
  fi
  [[ "$cmd" == completion ]] && { COMPREPLY=($(compgen -W "bash zsh" -- "$cur")); return; }
  case "$cmd" in
${cases}
  esac
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -F _seaport seaport
`;
  if (shell === "bash") return bash;
  return `#compdef seaport
# zsh completion for seaport ${VERSION}, through bash's completion function
autoload -U +X bashcompinit && bashcompinit
${bash}`;
}
