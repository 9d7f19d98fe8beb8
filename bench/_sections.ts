/**
 * The suite's sections beside the main table: the etcd store beside the
 * in-memory one (`bench/etcd.ts --json`, run as a subprocess) and the cold
 * start of each way of running seaport (`bench/startup.ts`).
 *
 * @module
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import process from "node:process";
import { measureStartup } from "./startup.ts";

/** A section of the report: a small table of its own, and its notes. */
export interface Section {
  /** `etcd` or `start`, as `--only` names it. */
  id: string;
  /** The heading. */
  title: string;
  /** How it was measured, one sentence. */
  how: string;
  /** The column headers. */
  head: string[];
  /** The rows, formatted. */
  rows: string[][];
  /** Remarks: skipped parts, failures. */
  notes: string[];
}

/** What `bench/etcd.ts --json` prints: one JSON object. */
export interface EtcdJson {
  rows: { figure: string; memory: string; etcd: string }[];
  notes: string[];
}

/**
 * Checks that `text` is the one JSON object `bench/etcd.ts --json` prints.
 *
 * @throws {Error} naming what is wrong.
 */
export function parseEtcdJson(text: string): EtcdJson {
  let v: unknown;
  try {
    v = JSON.parse(text.trim());
  } catch {
    throw new Error("its output is not one JSON object");
  }
  const o = v as Partial<EtcdJson> | null;
  if (
    typeof o !== "object" || o === null || !Array.isArray(o.rows) ||
    o.rows.some((r) =>
      typeof r !== "object" || r === null || typeof r.figure !== "string" ||
      typeof r.memory !== "string" || typeof r.etcd !== "string"
    )
  ) {
    throw new Error(
      `its JSON has no "rows" of { figure, memory, etcd } strings`,
    );
  }
  const notes = Array.isArray(o.notes)
    ? o.notes.filter((n): n is string => typeof n === "string")
    : [];
  return { rows: o.rows, notes };
}

/** The etcd section from a parsed `bench/etcd.ts --json`. */
export function etcdSectionOf(json: EtcdJson, quick: boolean): Section {
  return {
    id: "etcd",
    title: "Several servers on etcd",
    how: `\`deno task bench:etcd --json${
      quick ? " --quick" : ""
    }\`: one real etcd member on loopback, servers in its process, clients with the probe off`,
    head: ["figure", "in memory", "on etcd"],
    rows: json.rows.map((r) => [r.figure, r.memory, r.etcd]),
    notes: json.notes,
  };
}

/** Where etcd is, or `undefined` when it is not installed. */
function findEtcd(): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (dir !== "" && existsSync(`${dir}/etcd`)) return `${dir}/etcd`;
  }
  return undefined;
}

/**
 * Runs `bench/etcd.ts --json` (with `--quick`) and makes its section; a
 * section with only a note when etcd is not installed or the script fails.
 */
export async function etcdSection(
  root: string,
  quick: boolean,
  timeoutMs = quick ? 3 * 60_000 : 10 * 60_000,
): Promise<Section> {
  const empty = (note: string) => ({
    ...etcdSectionOf({ rows: [], notes: [] }, quick),
    notes: [note],
  });
  if (findEtcd() === undefined) {
    return empty(
      "skipped: etcd is not installed (apt-get install etcd-server)",
    );
  }
  const args = ["run", "--allow-all", `${root}bench/etcd.ts`, "--json"];
  if (quick) args.push("--quick");
  const child = spawn(Deno.execPath(), args, {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => out += d);
  child.stderr!.on("data", (d) => err = (err + d).slice(-2000));
  let timer: ReturnType<typeof setTimeout> | undefined;
  const code = await new Promise<number | string | null>((resolve) => {
    timer = setTimeout(() => {
      child.kill("SIGKILL");
      resolve(`no result within ${timeoutMs / 1000} s`);
    }, timeoutMs);
    child.on("close", resolve);
  });
  clearTimeout(timer);
  if (code !== 0) {
    const last = err.trim().split("\n").at(-1) ?? "";
    return empty(
      `skipped: bench/etcd.ts --json failed (${
        typeof code === "string" ? code : `exit ${code}`
      }${last ? `: ${last.slice(0, 300)}` : ""})`,
    );
  }
  try {
    return etcdSectionOf(parseEtcdJson(out), quick);
  } catch (e) {
    return empty(`skipped: bench/etcd.ts --json: ${(e as Error).message}`);
  }
}

/** The cold-start section: `runs` fresh processes of each way. */
export async function startSection(
  runs: number,
  progress: (line: string) => void,
): Promise<Section> {
  const { rows, notes } = await measureStartup(runs, progress);
  const cell = (c: { median: number; min: number }) =>
    `${c.median.toFixed(0)} ms (${c.min.toFixed(0)})`;
  return {
    id: "start",
    title: "Cold start",
    how:
      `median of ${runs} fresh processes each (fastest in parentheses): spawn to exit of \`seaport --version\`, and spawn of \`seaport 0\` until a client has its first query answered (\`deno task bench:start\`)`,
    head: ["how", "size", "`--version`", "`seaport PORT` → first answer"],
    rows: rows.map((r) => [r.how, r.size, cell(r.version), cell(r.served)]),
    notes,
  };
}

/** A section as aligned plain text. */
export function sectionText(s: Section): string {
  const all = [s.head, ...s.rows];
  const widths = s.head.map((_, c) =>
    Math.max(...all.map((row) => (row[c] ?? "").length))
  );
  const line = (row: string[]) =>
    row.map((cell, c) =>
      c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)
    ).join("  ");
  const out = [`${s.title} (${s.how}):`];
  if (s.rows.length > 0) {
    out.push(
      line(s.head),
      widths.map((w) => "-".repeat(w)).join("  "),
      ...s.rows.map(line),
    );
  }
  for (const n of s.notes) out.push(`  - ${n}`);
  return out.join("\n");
}

/** A section as Markdown. */
export function sectionMarkdown(s: Section): string {
  const esc = (t: string) => t.replaceAll("|", "\\|");
  const out = [`**${s.title}** (${s.how}):`, ""];
  if (s.rows.length > 0) {
    out.push(
      `| ${s.head.map(esc).join(" | ")} |`,
      `|---|${s.head.slice(1).map(() => "---:").join("|")}|`,
      ...s.rows.map((r) => `| ${r.map(esc).join(" | ")} |`),
      "",
    );
  }
  for (const n of s.notes) out.push(`- ${n}`);
  return out.join("\n");
}
