/**
 * Start-up of each way to run seaport: the single binary (Bun's compiler),
 * `deno run cli.ts`, the npm package on Node and on Bun, and `bun cli.ts`.
 * For each it measures, over several fresh processes, the cold start of
 * `seaport --version` (spawn to exit) and the time from spawning
 * `seaport 0 --host 127.0.0.1` until that registry has answered a first
 * query (one client from this process connects as soon as the server prints
 * its port, and asks `query("web")`). It prints medians (and the fastest run)
 * as a Markdown table, with the size of what each one runs.
 *
 * ```sh
 * deno task binary && deno task build:npm --no-test   # what it runs
 * deno task bench:start            # 10 runs of each
 * deno task bench:start --runs 20
 * ```
 *
 * @module
 */
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect } from "../mod.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BUN = join(ROOT, "node_modules", ".bin", "bun");
const BUN_TSCONFIG = join(ROOT, "dist", "bun-tsconfig.json");
const BIN_JS = join(ROOT, "npm", "esm", "bin.js");
const CLI_TS = join(ROOT, "cli.ts");
const BINARY = join(ROOT, "dist", "seaport");
const NODE = (() => {
  try {
    return new TextDecoder().decode(
      new Deno.Command("node", { args: ["-p", "process.execPath"] })
        .outputSync().stdout,
    ).trim();
  } catch {
    return "node"; // not installed: its rows fail with a note
  }
})();

interface Way {
  label: string;
  cmd: string[];
  /** What has to exist first, and how to make it. */
  needs: [file: string, how: string][];
  /** The files that make up what runs, for the size column. */
  size: string;
}

const WAYS: Way[] = [
  {
    label: "binary (`dist/seaport`)",
    cmd: [BINARY],
    needs: [[BINARY, "deno task binary"]],
    size: mib(BINARY),
  },
  {
    label: "`deno run -A cli.ts`",
    cmd: [Deno.execPath(), "run", "-A", CLI_TS],
    needs: [],
    size: `${mib(Deno.execPath())} deno + sources`,
  },
  {
    label: "`node npm/esm/bin.js`",
    cmd: [NODE, BIN_JS],
    needs: [[BIN_JS, "deno task build:npm --no-test"]],
    size: `${mib(NODE)} node + package`,
  },
  {
    label: "`bun npm/esm/bin.js`",
    cmd: [BUN, BIN_JS],
    needs: [[BIN_JS, "deno task build:npm --no-test"], [BUN, "npm install"]],
    size: `${mib(BUN)} bun + package`,
  },
  {
    // Bun resolves the sources' `npm:` specifiers through the tsconfig that
    // `deno task binary` writes
    label: "`bun cli.ts`",
    cmd: [BUN, `--tsconfig-override=${BUN_TSCONFIG}`, CLI_TS],
    needs: [[BUN, "npm install"], [BUN_TSCONFIG, "deno task binary"]],
    size: `${mib(BUN)} bun + sources`,
  },
];

function mib(file: string): string {
  try {
    return `${(statSync(file).size / 2 ** 20).toFixed(1)} MiB`;
  } catch {
    return "?";
  }
}

/** Milliseconds from spawn to exit of `seaport --version`. */
async function version(cmd: string[]): Promise<number> {
  const [program = "", ...args] = cmd;
  const started = performance.now();
  const out = await new Deno.Command(program, {
    args: [...args, "--version"],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const ms = performance.now() - started;
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success || !/^seaport \d/.test(text)) {
    throw new Error(`${cmd.join(" ")} --version printed "${text}"`);
  }
  return ms;
}

/** Milliseconds from spawning a server to the answer of its first query. */
async function firstQuery(cmd: string[]): Promise<number> {
  const [program = "", ...args] = cmd;
  const started = performance.now();
  const child = new Deno.Command(program, {
    args: [...args, "0", "--host", "127.0.0.1"],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("no answer in 10 s")), 10_000);
    });
    const answered = (async () => {
      let text = "";
      const decoder = new TextDecoder();
      for await (const chunk of child.stdout) {
        text += decoder.decode(chunk, { stream: true });
        const port = /listening on \S*:(\d+)\r?\n/.exec(text)?.[1];
        if (port === undefined) continue;
        const ports = connect("127.0.0.1", Number(port));
        try {
          const found = await ports.query("web");
          if (found.length !== 0) throw new Error("a new registry is empty");
        } finally {
          await ports.close();
        }
        return performance.now() - started;
      }
      throw new Error(`${cmd.join(" ")} exited without listening`);
    })();
    return await Promise.race([answered, timeout]);
  } finally {
    clearTimeout(timer);
    child.kill("SIGTERM");
    await child.status;
    await child.stdout.cancel().catch(() => {});
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** One way of running seaport, measured. */
export interface StartupRow {
  /** How it runs. */
  how: string;
  /** The size of what runs. */
  size: string;
  /** `--version`, spawn to exit: median and fastest, in ms. */
  version: { median: number; min: number };
  /** Spawn until a first query is answered: median and fastest, in ms. */
  served: { median: number; min: number };
}

/**
 * Measures every way of running seaport that is built here, `runs` fresh
 * processes each.
 *
 * @returns The rows, and a note for each way that was skipped or failed.
 */
export async function measureStartup(
  runs: number,
  progress: (line: string) => void = () => {},
): Promise<{ rows: StartupRow[]; notes: string[] }> {
  const rows: StartupRow[] = [];
  const notes: string[] = [];
  for (const way of WAYS) {
    const missing = way.needs.find(([file]) => !existsSync(file));
    if (missing !== undefined) {
      notes.push(`${way.label}: not built (\`${missing[1]}\`)`);
      continue;
    }
    try {
      await version(way.cmd); // once unmeasured: the page cache, Deno's cache
      const v: number[] = [];
      const q: number[] = [];
      for (let r = 0; r < runs; r++) {
        v.push(await version(way.cmd));
        q.push(await firstQuery(way.cmd));
      }
      rows.push({
        how: way.label,
        size: way.size,
        version: { median: median(v), min: Math.min(...v) },
        served: { median: median(q), min: Math.min(...q) },
      });
      progress(`${way.label}: done`);
    } catch (err) {
      notes.push(
        `${way.label}: failed (${
          (err instanceof Error ? err.message : String(err)).split("\n")[0]
        })`,
      );
    }
  }
  return { rows, notes };
}

async function main(args: string[]): Promise<number> {
  const i = args.indexOf("--runs");
  const runs = i >= 0 ? Number(args[i + 1]) : 10;
  if (!Number.isInteger(runs) || runs < 1) {
    console.error(`Invalid --runs "${args[i + 1]}"`);
    return 2;
  }
  const { rows, notes } = await measureStartup(runs, (l) => console.error(l));
  console.log(
    `Median of ${runs} runs (fastest in parentheses), ${Deno.build.target}:\n`,
  );
  console.log("| how | size | `--version` | served, first query answered |");
  console.log("| --- | --- | --- | --- |");
  const cell = (c: { median: number; min: number }) =>
    `${c.median.toFixed(0)} ms (${c.min.toFixed(0)})`;
  for (const r of rows) {
    console.log(
      `| ${r.how} | ${r.size} | ${cell(r.version)} | ${cell(r.served)} |`,
    );
  }
  for (const n of notes) console.log(`\n- ${n}`);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
