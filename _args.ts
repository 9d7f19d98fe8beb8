/**
 * The command line's grammar: parses `seaport` arguments (seed order such as
 * `HOST:PORT query NAME` and verb first such as `query HOST:PORT NAME`) into
 * a checked {@linkcode Parsed} command, and holds the help texts. Private to
 * the CLI.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseAddress } from "./client.ts";
import { type Meta, parsePattern, parseRole } from "./mod.ts";
import { VERSION } from "./version.ts";

/** The commands, after aliases (`register` is `service`). */
export type Command = "listen" | "show" | "query" | "service" | "watch";

const DEFAULT_TIMEOUT = 3000;
const RESERVED = new Set(["host", "port", "role", "version", "env", "id"]);
const SECRET = "the server's secret (default: $SEAPORT_SECRET)";
const CLIENT = `  --secret S      ${SECRET}
  --env E         the environment (default: the default one, "")
  --timeout MS    how long to try to reach the server (default: ${DEFAULT_TIMEOUT})`;
const HELP: Record<Command, [usage: string, text: string]> = {
  listen: [
    `seaport PORT [--secret S] [--host H] [--range LO-HI]
           [--http HTTPPORT [--http-token T]]
       seaport listen PORT ...`,
    `Runs a seaport server on PORT (0 picks a free one) and prints
"seaport listening on :PORT". Stops cleanly on SIGINT and SIGTERM.

  --secret S      make clients prove they know S (default: $SEAPORT_SECRET)
  --host H        the address to bind (default: every address)
  --range LO-HI   assign ports from LO to HI (default: 10000-20000)
  --http HTTPPORT also serve the HTTP API, metrics and web view on HTTPPORT
  --http-token T  the read-only token HTTP requests must carry (default:
                  $SEAPORT_HTTP_TOKEN); required with a secret`,
  ],
  show: [
    `seaport HOST:PORT show [--secret S] [--env E] [--timeout MS]
       seaport show HOST:PORT ...`,
    `Prints the port map of the server at HOST:PORT, every registration of
every environment (of --env E only, when given), as JSON.

${CLIENT}`,
  ],
  query: [
    `seaport HOST:PORT query NAME@RANGE [--secret S] [--env E] [--timeout MS]
       seaport query HOST:PORT NAME@RANGE ...`,
    `Prints a JSON array of the "host:port" strings of the services matching
NAME@RANGE. RANGE may use semver patterns such as 1.2.x, ^2 or >=1.4.

${CLIENT}`,
  ],
  service: [
    `seaport HOST:PORT service NAME@VERSION [--secret S] [--env E]
           [--meta.KEY=VALUE ...] -- COMMAND [ARGS...]
       seaport register HOST:PORT NAME@VERSION ... -- COMMAND [ARGS...]`,
    `Gets a port for NAME@VERSION and runs COMMAND with the port as its last
argument and in $PORT. The service becomes visible once COMMAND accepts TCP
connections on the port. COMMAND is restarted on the same port when it exits.
SIGINT and SIGTERM are passed on to COMMAND; the port is freed when it stops.

  --secret S        ${SECRET}
  --env E           the environment to register in (default: "")
  --meta.KEY=VALUE  an extra field of the registration (a string)`,
  ],
  watch: [
    `seaport HOST:PORT watch [--secret S] [--env E] [--timeout MS]
       seaport watch HOST:PORT ...`,
    `Prints every allocate, assume and free event of the server as a JSON
line, {"type":"allocate","record":{...}}, until interrupted.

${CLIENT}`,
  ],
};
const TRAILER = `  -h, --help      show this help
  -v, --version   show the version

Exit codes: 0 success, 1 failure, 2 bad usage.`;

/** The usage of one command, or of every command. */
export function usage(command?: Command): string {
  if (command !== undefined) {
    return `Usage: ${
      HELP[command][0]
    }\nRun "seaport ${command} --help" for more.`;
  }
  const lines = Object.values(HELP).map(([u]) =>
    u.split("\n       seaport")[0]
  );
  return `Usage: ${lines.join("\n       ")}
       (the command may also come first: seaport query HOST:PORT NAME@RANGE)
Run "seaport COMMAND --help" for more.`;
}

/** Bad usage: reported with the usage of the command and exit code 2. */
export class UsageError extends Error {
  constructor(message: string, readonly command?: Command) {
    super(message);
    this.name = "UsageError";
  }
}

/** A checked command line. */
export interface Parsed {
  command: Command;
  address: string;
  role: string;
  port: number;
  secret: string | undefined;
  env: string;
  /** No `--env` was given: `show` covers every environment. */
  allEnvs: boolean;
  host: string | undefined;
  range: [number, number] | undefined;
  /** `--http`: the HTTP side's port. */
  httpPort: number | undefined;
  /** `--http-token` or `$SEAPORT_HTTP_TOKEN`. */
  httpToken: string | undefined;
  timeout: number;
  meta: Meta;
  exec: string[];
}

/** Parses the arguments into a command, or into text to print (help). */
export function parse(
  args: string[],
  env: Readonly<Record<string, string | undefined>>,
): Parsed | string {
  const dash = args.indexOf("--");
  const head = dash < 0 ? args : args.slice(0, dash);
  const exec = dash < 0 ? [] : args.slice(dash + 1);
  const { tokens } = parseArgs({
    args: head,
    allowPositionals: true,
    strict: false,
    tokens: true,
    options: {
      secret: { type: "string" },
      host: { type: "string" },
      range: { type: "string" },
      timeout: { type: "string" },
      env: { type: "string" },
      http: { type: "string" },
      "http-token": { type: "string" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean", short: "v" },
    },
  });
  const words: string[] = [];
  const opts = new Map<string, string | undefined>();
  const meta: Meta = {};
  let problem: string | undefined; // reported once the command is known
  for (const t of tokens) {
    if (t.kind === "positional") words.push(t.value);
    if (t.kind !== "option") continue;
    if (t.name.startsWith("meta.")) {
      const key = t.name.slice(5);
      if (key === "" || t.value === undefined) {
        problem ??= `Expected --meta.KEY=VALUE, got "${t.rawName}"`;
      } else if (RESERVED.has(key)) {
        problem ??= `--meta cannot set the reserved field "${key}"`;
      } else meta[key] = t.value;
    } else if (t.name === "help" || t.name === "version") {
      if (t.inlineValue) problem ??= `${t.rawName} takes no value`;
      opts.set(t.name, "");
    } else if (!STRING_OPTIONS.includes(t.name)) {
      problem ??= `Unknown option "${t.rawName}"`;
    } else if (t.value === undefined || (t.value === "" && t.name !== "env")) {
      problem ??= `Option "${t.rawName}" needs a value`;
    } else opts.set(t.name, t.value);
  }
  if (opts.has("version")) return `seaport ${VERSION}`;

  const [command, rest] = resolve(words, opts.has("help"));
  if (command === "help") return rest[0] ? help(rest[0]) : overview();
  if (opts.has("help")) return command ? help(command) : overview();
  if (command === undefined) {
    throw new UsageError(problem ?? "Missing a command");
  }

  const allowed: Record<Command, string[]> = {
    listen: ["secret", "host", "range", "http", "http-token"],
    show: ["secret", "env", "timeout"],
    query: ["secret", "env", "timeout"],
    watch: ["secret", "env", "timeout"],
    service: ["secret", "env"],
  };
  const fail = (msg: string) => new UsageError(msg, command);
  if (problem !== undefined) throw fail(problem);
  for (const name of opts.keys()) {
    if (!allowed[command].includes(name)) {
      throw fail(`Option "--${name}" does not apply to "${command}"`);
    }
  }
  if (command !== "service" && Object.keys(meta).length > 0) {
    throw fail(`--meta.KEY=VALUE only applies to "service"`);
  }
  if (command !== "service" && dash >= 0) {
    throw fail(`"--" and a command only apply to "service"`);
  }
  const arity = { listen: 1, show: 1, watch: 1, query: 2, service: 2 };
  if (rest.length !== arity[command]) {
    throw fail(
      rest.length < arity[command]
        ? `Missing arguments for "${command}"`
        : `Unexpected argument "${rest[arity[command]]}"`,
    );
  }
  const [first = "", second = ""] = rest;
  const parsed: Parsed = {
    command,
    address: first,
    role: second,
    port: 0,
    secret: opts.get("secret") ?? (env.SEAPORT_SECRET || undefined),
    env: opts.get("env") ?? "",
    allEnvs: opts.get("env") === undefined,
    host: opts.get("host"),
    range: undefined,
    httpPort: undefined,
    httpToken: undefined,
    timeout: DEFAULT_TIMEOUT,
    meta,
    exec,
  };
  if (command === "listen") {
    parsed.port = integer(first, "port", 0, 65535, command);
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
    const http = opts.get("http");
    if (http !== undefined) {
      parsed.httpPort = integer(http, "HTTP port", 0, 65535, command);
      parsed.httpToken = opts.get("http-token") ??
        (env.SEAPORT_HTTP_TOKEN || undefined);
      if (parsed.secret !== undefined && parsed.httpToken === undefined) {
        throw fail(
          `--http with a secret needs --http-token T (or $SEAPORT_HTTP_TOKEN): a read-only token for HTTP, never the secret`,
        );
      }
    } else if (opts.has("http-token")) {
      throw fail(`--http-token only applies with --http HTTPPORT`);
    }
    return parsed;
  }
  try {
    parseAddress([first]);
    if (command === "query") parsePattern(second);
    if (command === "service") parseRole(second);
  } catch (err) {
    throw fail(err instanceof Error ? err.message : String(err));
  }
  const timeout = opts.get("timeout");
  if (timeout !== undefined) {
    parsed.timeout = integer(timeout, "timeout", 1, 2 ** 31 - 1, command);
  }
  if (command === "service" && exec.length === 0) {
    throw fail(`Missing the command to run after "--"`);
  }
  return parsed;
}

const STRING_OPTIONS = [
  "secret",
  "host",
  "range",
  "timeout",
  "env",
  "http",
  "http-token",
];
const VERBS = new Map<string, Command | "help">([
  ["listen", "listen"],
  ["show", "show"],
  ["query", "query"],
  ["service", "service"],
  ["register", "service"],
  ["watch", "watch"],
  ["help", "help"],
]);

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
    if (v !== undefined && v !== "listen" && v !== "help") {
      return [v, [first, ...words.slice(2)]];
    }
    throw new UsageError(`Unknown command "${second}"`);
  }
  if (/^\d+$/.test(first)) return ["listen", words];
  if (helping) return [undefined, []];
  throw new UsageError(
    first.includes(":")
      ? `Missing a command after "${first}": show, query, service or watch`
      : `Unknown command "${first}"`,
  );
}

function overview(): string {
  return `seaport ${VERSION}: service registry and port assignment.

${usage()}

${TRAILER}`;
}

function help(name: string): string {
  const command = name === "register" ? "service" : name;
  if (!Object.hasOwn(HELP, command)) {
    throw new UsageError(`Unknown command "${name}"`);
  }
  const [use, text] = HELP[command as Command];
  return `Usage: ${use}\n\n${text}\n${TRAILER}`;
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
