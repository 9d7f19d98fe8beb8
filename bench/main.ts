/**
 * The seaport benchmark suite: this package (on Deno, and on Node from the
 * built npm package) against the original seaport 2.0.9 from npm, on
 * loopback. Every workload runs the server in its own process and clients in
 * other processes, and quotes the median of several runs.
 *
 * ```sh
 * deno task bench                 # the full suite, a table (~8 min on 2 cores)
 * deno task bench --json          # one JSON object on stdout
 * deno task bench --md            # the table as Markdown
 * deno task bench --quick         # small sizes, 1 run (~30 s; a smoke test)
 * deno task bench --runs 5 --only a,b --impl ours-deno,theirs
 * deno task bench --set regs=5000,queries=500
 * deno task bench --profile .tmp/bench-prof   # CPU profiles (ours)
 * deno task bench --compare .tmp/bench-final.json   # previous figures from a file
 * ```
 *
 * Every run is saved to `.tmp/bench-last.json` (`.tmp/bench-last-quick.json`
 * for `--quick`), and the next run shows those figures in its "previous"
 * columns, the changes past the noise marked.
 *
 * Workloads: (a) registration throughput, (b) query latency, (c) wake-up
 * latency, (d) cleanup after SIGKILL / SIGSTOP, (e) server memory per
 * registration, (f) restart recovery, and (b)/(c) again at other sizes.
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { metricDefs, targets } from "./_metrics.ts";
import { killAll, liveCount, oursDenoLaunch } from "./_proc.ts";
import { renderProfile } from "./_profile.ts";
import { etcdSection, type Section, startSection } from "./_sections.ts";
import {
  type ImplId,
  median,
  num,
  previousOf,
  renderMarkdown,
  renderText,
  type Report,
  type Sample,
} from "./_report.ts";
import {
  type Ctx,
  type Group,
  GROUPS,
  type Impl,
  type Metrics,
  profiles,
  QUICK,
  scenarioA1,
  scenarioA1NoProbe,
  scenarioA50,
  scenarioD,
  scenarioF,
  scenarioFloor,
  scenarioScale,
  SIZES,
  type Sizes,
  spawnWorker,
} from "./_workloads.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const THEIRS_DIR = `${ROOT}.tmp/bench-theirs`;
const NODE_DIR = `${ROOT}.tmp/bench-node`;
const THEIRS_VERSION = "2.0.9";

// ---------------------------------------------------------------- options --

const ALL_IMPLS: ImplId[] = ["ours-deno", "ours-node", "theirs"];

interface Options {
  runs: number;
  quick: boolean;
  json: boolean;
  md: boolean;
  only: Set<Group>;
  impls: ImplId[];
  sizes: Sizes;
  oursNodeModule: string;
  profileDir: string | undefined;
  save: string | undefined;
  render: string | undefined;
  /** The sections to run beside the table. */
  sections: Set<Extra>;
  /** The file of the previous run to compare with; `null`: none. */
  compare: string | null | undefined;
}

/** The sections beside the table, as `--only` names them. */
const EXTRAS = ["etcd", "start"] as const;
type Extra = typeof EXTRAS[number];

/** Where each run is saved, and the next one reads its previous figures. */
function lastFile(quick: boolean): string {
  return `${ROOT}.tmp/bench-last${quick ? "-quick" : ""}.json`;
}

const USAGE = `Usage: deno task bench [options]
  --runs N              runs per workload, the median is quoted (default 3; 1 with --quick)
  --quick               small sizes for a fast smoke run
  --json                print one JSON object on stdout (progress goes to stderr)
  --md                  print the table as Markdown
  --only a,b,...        workloads: ${GROUPS.join(",")}; sections: ${
  EXTRAS.join(",")
}
                        (etcd: bench/etcd.ts --json beside the table; start: cold start)
  --impl x,y            implementations: ${ALL_IMPLS.join(",")}
  --set k=v,...         sizes: ${Object.keys(SIZES).join(", ")}
  --ours-node-module P  our package for Node (default: npm/esm/mod.js)
  --profile DIR         write CPU profiles of our servers and clients to DIR (slows them)
  --save FILE           also write the JSON report to FILE
  --render FILE         print a saved JSON report (as a table, or with --md/--json); runs nothing
  --compare FILE        show FILE's figures in "previous" columns (default: the last run's,
                        .tmp/bench-last.json, or bench-last-quick.json with --quick)
  --no-compare          no "previous" columns`;

function parseArgs(args: string[]): Options {
  const o: Options = {
    runs: 0,
    quick: false,
    json: false,
    md: false,
    only: new Set(GROUPS),
    impls: [...ALL_IMPLS],
    sizes: { ...SIZES },
    oursNodeModule: `${ROOT}npm/esm/mod.js`,
    profileDir: undefined,
    save: undefined,
    render: undefined,
    sections: new Set(EXTRAS),
    compare: undefined,
  };
  const sets: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = () => {
      const v = args[++i];
      if (v === undefined) throw new TypeError(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case "--runs": {
        o.runs = Number(value());
        if (!Number.isInteger(o.runs) || o.runs < 1 || o.runs > 99) {
          throw new RangeError("--runs takes an integer from 1 to 99");
        }
        break;
      }
      case "--quick":
        o.quick = true;
        break;
      case "--json":
        o.json = true;
        break;
      case "--md":
        o.md = true;
        break;
      case "--only": {
        const gs = value().split(",");
        for (const g of gs) {
          if (
            !GROUPS.includes(g as Group) && !EXTRAS.includes(g as Extra)
          ) {
            throw new TypeError(
              `Unknown workload "${g}" (${[...GROUPS, ...EXTRAS].join(",")})`,
            );
          }
        }
        o.only = new Set(
          gs.filter((g) => GROUPS.includes(g as Group)) as Group[],
        );
        o.sections = new Set(
          gs.filter((g) => EXTRAS.includes(g as Extra)) as Extra[],
        );
        break;
      }
      case "--impl": {
        const is = value().split(",");
        for (const i of is) {
          if (!ALL_IMPLS.includes(i as ImplId)) {
            throw new TypeError(`Unknown implementation "${i}"`);
          }
        }
        o.impls = ALL_IMPLS.filter((i) => is.includes(i));
        break;
      }
      case "--set":
        sets.push(...value().split(","));
        break;
      case "--ours-node-module":
        o.oursNodeModule = value();
        break;
      case "--save":
        o.save = value();
        break;
      case "--render":
        o.render = value();
        break;
      case "--compare":
        o.compare = value();
        break;
      case "--no-compare":
        o.compare = null;
        break;
      case "--profile":
        o.profileDir = value();
        break;
      case "-h":
      case "--help":
        console.log(USAGE);
        Deno.exit(0);
        break;
      default:
        throw new TypeError(`Unknown option "${a}"\n${USAGE}`);
    }
  }
  if (o.quick) o.sizes = { ...QUICK };
  if (o.runs === 0) o.runs = o.quick ? 1 : 3;
  for (const kv of sets) {
    const [k, v] = kv.split("=");
    if (k === undefined || !(k in SIZES) || v === undefined) {
      throw new TypeError(
        `--set ${kv}: expected one of ${Object.keys(SIZES).join(", ")}=N`,
      );
    }
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) {
      throw new RangeError(`--set ${kv}: need a positive integer`);
    }
    o.sizes[k as keyof Sizes] = n;
  }
  const s = o.sizes;
  if (s.regs > 10_001 || s.small > 10_001) {
    throw new RangeError(
      "regs and small must be at most 10001: one connection is one host, whose default port range 10000-20000 has 10001 ports",
    );
  }
  if (s.fConns % s.fProcs !== 0) {
    throw new RangeError("fConns must be a multiple of fProcs");
  }
  if (s.clients < s.clientProcs) {
    throw new RangeError("clients must be >= clientProcs");
  }
  return o;
}

// ------------------------------------------------------------------ setup --

const log = (msg: string) => process.stderr.write(`${msg}\n`);
const now = (): number => performance.timeOrigin + performance.now();

function sh(cmd: string, args: string[], cwd = ROOT): string {
  return execFileSync(cmd, args, {
    cwd,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  }).trim();
}

/** Installs seaport 2.0.9 into .tmp/bench-theirs unless it is there. */
function installTheirs(): string {
  const pkg = `${THEIRS_DIR}/node_modules/seaport/package.json`;
  if (existsSync(pkg)) {
    const v =
      (JSON.parse(readFileSync(pkg, "utf8")) as { version: string }).version;
    if (v === THEIRS_VERSION) return `${THEIRS_DIR}/node_modules/seaport`;
  }
  log(`installing seaport@${THEIRS_VERSION} into ${THEIRS_DIR} …`);
  mkdirSync(THEIRS_DIR, { recursive: true });
  if (!existsSync(`${THEIRS_DIR}/package.json`)) {
    writeFileSync(`${THEIRS_DIR}/package.json`, '{ "private": true }\n');
  }
  sh("npm", [
    "install",
    "--no-audit",
    "--no-fund",
    "--loglevel=error",
    `seaport@${THEIRS_VERSION}`,
  ], THEIRS_DIR);
  return `${THEIRS_DIR}/node_modules/seaport`;
}

/** Transpiles the worker for Node (type stripping with TypeScript). */
function buildNodeWorker(): string {
  const require = createRequire(`${ROOT}package.json`);
  const ts = require("typescript") as {
    transpileModule(
      src: string,
      o: { compilerOptions: Record<string, unknown>; fileName: string },
    ): { outputText: string };
    ModuleKind: { ESNext: number };
    ScriptTarget: { ES2022: number };
  };
  mkdirSync(NODE_DIR, { recursive: true });
  writeFileSync(`${NODE_DIR}/package.json`, '{ "type": "module" }\n');
  for (const f of ["_ours_worker", "_types"]) {
    const src = readFileSync(`${ROOT}bench/${f}.ts`, "utf8");
    const out = ts.transpileModule(src, {
      fileName: `${f}.ts`,
      compilerOptions: {
        module: ts.ModuleKind.ESNext,
        target: ts.ScriptTarget.ES2022,
        rewriteRelativeImportExtensions: true,
      },
    });
    writeFileSync(`${NODE_DIR}/${f}.js`, out.outputText);
  }
  return `${NODE_DIR}/_ours_worker.js`;
}

function heartbeatSupported(): boolean {
  const src = readFileSync(`${ROOT}server.ts`, "utf8");
  const opts =
    /export interface ServerOptions \{([\s\S]*?)\n\}/.exec(src)?.[1] ?? "";
  return /^\s*heartbeat\??\s*:/m.test(opts);
}

function setupImpls(o: Options, notes: string[]): Impl[] {
  const hb = heartbeatSupported();
  if (!hb) {
    notes.push(
      "Our server has no heartbeat option yet (ServerOptions.heartbeat in server.ts): the SIGSTOP (half-open) rows are n/a for ours.",
    );
  }
  const impls: Impl[] = [];
  const node = process.env.NODE ?? "node";
  for (const id of o.impls) {
    if (id === "ours-deno") {
      impls.push({
        id,
        ours: true,
        heartbeat: hb,
        launch: oursDenoLaunch(id),
      });
    } else if (id === "ours-node") {
      const mod = o.oursNodeModule;
      if (!existsSync(mod)) {
        const note = `skipped: ${
          mod.replace(ROOT, "")
        } is not built (build it with \`deno run -A npm_build.ts --no-test\`)`;
        impls.push({ id, ours: true, heartbeat: hb, launch: undefined, note });
        notes.push(`ours (Node) ${note}.`);
        continue;
      }
      const stale = [
        "server.ts",
        "client.ts",
        ...CLIENT,
        "registry.ts",
        "protocol.ts",
        "transport.ts",
      ]
        .filter((f) => statSync(`${ROOT}${f}`).mtimeMs > statSync(mod).mtimeMs);
      if (stale.length > 0) {
        notes.push(
          `ours (Node): ${mod.replace(ROOT, "")} is older than ${
            stale.join(", ")
          }; rebuild it for current figures.`,
        );
      }
      try {
        const worker = buildNodeWorker();
        impls.push({
          id,
          ours: true,
          heartbeat: hb,
          launch: {
            label: id,
            cmd: node,
            args: ["--expose-gc", worker, pathToFileURL(mod).href],
            cwd: ROOT,
          },
        });
      } catch (err) {
        const note = `skipped: cannot transpile the Node worker (${err})`;
        impls.push({ id, ours: true, heartbeat: hb, launch: undefined, note });
        notes.push(`ours (Node) ${note}.`);
      }
    } else {
      try {
        const dir = installTheirs();
        impls.push({
          id,
          ours: false,
          heartbeat: true,
          launch: {
            label: id,
            cmd: node,
            args: ["--expose-gc", `${ROOT}bench/_theirs_worker.cjs`, dir],
            cwd: ROOT,
          },
        });
      } catch (err) {
        const note = `skipped: cannot install seaport@${THEIRS_VERSION} (${
          String(err).split("\n")[0]
        })`;
        impls.push({
          id,
          ours: false,
          heartbeat: true,
          launch: undefined,
          note,
        });
        notes.push(`theirs ${note}.`);
      }
    }
  }
  return impls;
}

// ------------------------------------------------------------------- main --

async function machine(loadAtStart: number): Promise<Report["machine"]> {
  let memory = `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`;
  try {
    memory = sh("free", ["-h"]).split("\n").find((l) =>
      l.startsWith("Mem:")
    )?.replace(/\s+/g, " ") ??
      memory;
  } catch { /* no free(1) */ }
  await Promise.resolve();
  return {
    nproc: os.cpus().length,
    cpu: os.cpus()[0]?.model.trim() ?? "unknown",
    memory,
    os: `${os.type()} ${os.release()}`,
    load: [loadAtStart, os.loadavg()[0] ?? 0],
  };
}

async function main(args: string[]): Promise<number> {
  const o = parseArgs(args);
  if (o.render !== undefined) {
    const report = JSON.parse(readFileSync(o.render, "utf8")) as Report;
    if (typeof o.compare === "string") {
      const notes: string[] = [];
      compareWith(report, o.compare, notes);
      report.notes = [...report.notes, ...notes];
    }
    print(report, o);
    return 0;
  }
  const started = now();
  const loadAtStart = os.loadavg()[0] ?? 0;
  const sourcesAtStart = coreStamps();
  const revision = gitRevision();
  const notes: string[] = [];
  if (o.profileDir !== undefined) {
    mkdirSync(o.profileDir, { recursive: true });
    notes.push(
      `Profiling run: our servers ran under the CPU profiler (profiles in ${o.profileDir}); figures are slower than usual.`,
    );
  }
  const impls = setupImpls(o, notes);
  const runnable = impls.filter((i) => i.launch !== undefined);
  const s = o.sizes;
  const results = new Map<ImplId, Map<string, Sample[]>>();
  const record = (impl: Impl, m: Metrics) => {
    let byKey = results.get(impl.id);
    if (byKey === undefined) results.set(impl.id, byKey = new Map());
    for (const [k, v] of Object.entries(m)) {
      let arr = byKey.get(k);
      if (arr === undefined) byKey.set(k, arr = []);
      arr.push(v);
    }
  };

  // Sanity check of the shared clock used across processes in (a) and (d).
  for (const impl of runnable) {
    const w = spawnWorker(impl);
    try {
      let best = { rtt: Infinity, off: 0 };
      for (let i = 0; i < 8; i++) {
        const t0 = now();
        const { t } = await w.call("clock", {}, 30_000);
        const t1 = now();
        if (t1 - t0 < best.rtt) best = { rtt: t1 - t0, off: t - (t0 + t1) / 2 };
      }
      if (Math.abs(best.off) > best.rtt / 2 + 0.05) {
        notes.push(
          `${impl.id}: the worker clock is off by ${
            best.off.toFixed(3)
          } ms (round trip ${
            best.rtt.toFixed(3)
          } ms); (a) and (d) figures carry that error.`,
        );
      }
    } finally {
      await w.kill();
    }
  }

  const ctx: Ctx = {
    only: o.only,
    profileDir: o.profileDir,
    sizes: s,
    run: 0,
    capped: new Map(),
  };
  const scenarios: [string, boolean, (impl: Impl) => Promise<Metrics>][] = [
    [
      "a1 (+e, b, c)",
      ["a", "b", "c", "e"].some((g) => o.only.has(g as Group)),
      (i) => scenarioA1(i, ctx),
    ],
    ["a1-noprobe", o.only.has("a"), (i) => scenarioA1NoProbe(i, ctx)],
    [
      "floor",
      o.only.has("b") || o.only.has("c"),
      (i) => scenarioFloor(i, ctx),
    ],
    ["a-many", o.only.has("a"), (i) => scenarioA50(i, ctx)],
    ["scale-small", o.only.has("scale"), (i) => scenarioScale(i, ctx, "small")],
    [
      "scale-large (+e)",
      o.only.has("scale") || o.only.has("e"),
      (i) => scenarioScale(i, ctx, "large"),
    ],
    ["d", o.only.has("d"), (i) => scenarioD(i, ctx)],
    ["f", o.only.has("f"), (i) => scenarioF(i, ctx)],
  ];
  const failed = new Set<string>();
  for (const [name, on, fn] of scenarios) {
    if (!on) continue;
    for (let run = 1; run <= o.runs; run++) {
      ctx.run = run;
      for (const impl of runnable) {
        if (failed.has(`${impl.id}:${name}`)) continue;
        const t = now();
        try {
          const m = await fn(impl);
          record(impl, m);
          if (Object.keys(m).length > 0) {
            log(
              `[${name}] ${impl.id} run ${run}/${o.runs} (${
                ((now() - t) / 1000).toFixed(1)
              } s): ${brief(m)}`,
            );
          }
        } catch (err) {
          failed.add(`${impl.id}:${name}`);
          const msg = (err instanceof Error ? err.message : String(err)).split(
            "\n",
          )[0]!.slice(0, 400);
          notes.push(`${impl.id} failed in "${name}" (run ${run}): ${msg}`);
          log(`[${name}] ${impl.id} run ${run} FAILED: ${msg}`);
        }
        if (liveCount() > 0) await killAll();
      }
    }
  }

  const sections: Section[] = [];
  if (o.sections.has("etcd")) {
    log("[etcd] bench/etcd.ts --json" + (o.quick ? " --quick" : ""));
    sections.push(await etcdSection(ROOT, o.quick));
  }
  if (o.sections.has("start")) {
    log("[start] cold start");
    sections.push(
      await startSection(
        o.quick ? 1 : Math.max(5, o.runs),
        (l) => log(`[start] ${l}`),
      ),
    );
  }

  // Medians, derived metrics, the report.
  const defs = metricDefs(s);
  const medians = new Map<
    string,
    Partial<Record<ImplId, Sample | undefined>>
  >();
  for (const impl of runnable) {
    const byKey = results.get(impl.id) ?? new Map<string, Sample[]>();
    for (const d of defs) {
      const samples = byKey.get(d.key);
      if (samples === undefined) continue;
      let row = medians.get(d.key);
      if (row === undefined) medians.set(d.key, row = {});
      row[impl.id] = median(samples);
    }
    for (
      const [key, b] of [
        ["scale.b", "b"],
        ["scale.c", "c"],
        ["scale.bx", "bx"],
      ] as const
    ) {
      const lo = num(medians.get(`${b}.p50.small`)?.[impl.id]);
      const hi = num(medians.get(`${b}.p50.large`)?.[impl.id]);
      if (lo === undefined || hi === undefined) continue;
      let row = medians.get(key);
      if (row === undefined) medians.set(key, row = {});
      row[impl.id] = hi / lo;
      byKey.set(key, [hi / lo]);
    }
    for (const [key, samples] of byKey) {
      if (!/\.n\./.test(key)) continue;
      notes.push(
        `${impl.id}: ${key.startsWith("b") ? "query" : "wake-up"} loop at "${
          key.split(".")[2]
        }" hit the ${s.loopLimitMs} ms limit after ${
          samples.join("/")
        } samples.`,
      );
    }
  }
  const changed = [...coreStamps()].filter(([f, t]) =>
    sourcesAtStart.get(f) !== t
  ).map(([f]) => f);
  if (changed.length > 0) {
    notes.push(
      `${
        changed.join(", ")
      } changed during the run: workers started later ran the new code.`,
    );
  }
  const report: Report = {
    date: new Date().toISOString(),
    machine: await machine(loadAtStart),
    runtimes: {
      deno: Deno.version.deno,
      v8: Deno.version.v8,
      node: (() => {
        try {
          return sh(process.env.NODE ?? "node", ["--version"]);
        } catch {
          return "unavailable";
        }
      })(),
    },
    command: `deno task bench ${args.join(" ")}`.trim(),
    revision,
    runs: o.runs,
    quick: o.quick,
    sizes: { ...s },
    impls: Object.fromEntries(
      ALL_IMPLS.map((id) => {
        const impl = impls.find((i) => i.id === id);
        const entry: { ran: boolean; note?: string } = {
          ran: impl?.launch !== undefined,
        };
        const note = impl === undefined ? "not selected" : impl.note;
        if (note !== undefined) entry.note = note;
        return [id, entry];
      }),
    ) as Report["impls"],
    metrics: defs.filter((d) => medians.has(d.key)).map((d) => ({
      ...d,
      cells: Object.fromEntries(
        runnable.map((i) => [i.id, {
          median: medians.get(d.key)?.[i.id],
          samples: results.get(i.id)?.get(d.key) ?? [],
        }]),
      ),
    })),
    targets: targets(medians, impls, s),
    notes,
    seconds: (now() - started) / 1000,
    sections,
  };
  const last = lastFile(o.quick);
  if (o.compare !== null) compareWith(report, o.compare ?? last, notes);
  const saved = JSON.stringify({ ...report, previous: undefined }, null, 2) +
    "\n";
  if (o.save !== undefined) writeFileSync(o.save, saved);
  try {
    mkdirSync(`${ROOT}.tmp`, { recursive: true });
    writeFileSync(last, saved);
  } catch (err) {
    notes.push(`could not save this run to ${last}: ${String(err)}`);
  }
  print(report, o);
  for (const p of profiles) log(renderProfile(p, ROOT));
  return 0;
}

/** The client's parts (client.ts re-exports them). */
const CLIENT = [
  "client/mod.ts",
  "client/client.ts",
  "client/connection.ts",
  "client/servers.ts",
  "client/requests.ts",
  "client/registrations.ts",
  "client/proposals.ts",
  "client/events.ts",
  "client/ports.ts",
  "client/args.ts",
];

const CORE = [
  "mod.ts",
  "client.ts",
  ...CLIENT,
  "server.ts",
  "registry.ts",
  "protocol.ts",
  "transport.ts",
  "errors.ts",
  "_outbox.ts",
  "_emitter.ts",
  "_auth.ts",
];

/** Modification times of the core sources, to notice edits during a run. */
function coreStamps(): Map<string, number> {
  const out = new Map<string, number>();
  for (const f of CORE) {
    try {
      out.set(f, statSync(`${ROOT}${f}`).mtimeMs);
    } catch { /* absent */ }
  }
  return out;
}

/** `git rev-parse --short HEAD`, `+dirty` if core files differ from it. */
function gitRevision(): string {
  try {
    const rev = sh("git", ["rev-parse", "--short", "HEAD"]);
    const dirty = sh("git", [
      "--no-optional-locks",
      "status",
      "--porcelain",
      "--",
      ...CORE,
    ]) !== "";
    return dirty ? `${rev}+dirty` : rev;
  } catch {
    return "unknown";
  }
}

/**
 * Puts the figures of the run saved in `file` beside `report`'s, when it
 * was made with the same sizes (a note says why not otherwise).
 */
function compareWith(report: Report, file: string, notes: string[]): void {
  if (!existsSync(file)) return;
  let earlier: Report;
  try {
    earlier = JSON.parse(readFileSync(file, "utf8")) as Report;
    if (!Array.isArray(earlier.metrics)) throw new Error("no metrics");
  } catch (err) {
    notes.push(
      `${file} is not a saved report (${String(err)}): no previous figures`,
    );
    return;
  }
  const same = JSON.stringify(earlier.sizes) === JSON.stringify(report.sizes);
  if (!same) {
    notes.push(
      `${file} was measured with other sizes (${
        earlier.quick ? "--quick" : "full"
      }): no previous figures`,
    );
    return;
  }
  report.previous = previousOf(earlier, file.replace(ROOT, ""));
}

function print(report: Report, o: Options): void {
  if (o.json) console.log(JSON.stringify(report, null, 2));
  else if (o.md) console.log(renderMarkdown(report));
  else console.log(renderText(report));
}

function brief(m: Metrics): string {
  return Object.entries(m).map(([k, v]) =>
    `${k}=${
      typeof v === "number"
        ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2))
        : JSON.stringify(v)
    }`
  ).join(" ");
}

if (import.meta.main) {
  const stop = () => {
    killAll().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  let code = 1;
  try {
    code = await main(Deno.args);
  } catch (err) {
    log(err instanceof Error ? `${err.name}: ${err.message}` : String(err));
    code = 2;
  } finally {
    await killAll();
  }
  Deno.exit(code);
}
