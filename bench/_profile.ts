/**
 * Summarises a V8 `.cpuprofile` (as written by the workers' `profileStop`):
 * the functions with the most self time and the most total time, with
 * `file:line` relative to the repository.
 *
 * ```sh
 * deno run --allow-read bench/_profile.ts .tmp/bench-prof/ours-deno-a1.cpuprofile
 * ```
 *
 * @module
 */
import { readFileSync } from "node:fs";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/** One function's share of a profile. */
export interface Hot {
  /** `name (file:line)`. */
  where: string;
  /** Self time in ms. */
  self: number;
  /** Total (inclusive) time in ms. */
  total: number;
}

const SKIP = new Set(["(idle)", "(program)", "(root)"]);

const sources = new Map<string, string[] | undefined>();

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

const MODIFIERS =
  "(?:(?:static|async|get|set|private|public|protected|readonly|override)\\s+)*";

/**
 * Deno profiles TypeScript after type stripping, so V8's line numbers are
 * those of the emitted JavaScript. This finds the function's declaration in
 * the `.ts` source instead: the match closest at or after the emitted line
 * (stripping types only removes lines).
 */
function sourceLine(f: CallFrame): string | undefined {
  if (!f.url.startsWith("file://") || !f.url.endsWith(".ts")) return undefined;
  const name = f.functionName;
  if (name === "" || name.startsWith("(")) return undefined;
  if (!sources.has(f.url)) {
    try {
      sources.set(f.url, readFileSync(new URL(f.url), "utf8").split("\n"));
    } catch {
      sources.set(f.url, undefined);
    }
  }
  const lines = sources.get(f.url);
  if (lines === undefined) return undefined;
  const n = escapeRe(name);
  const decl = new RegExp(
    [
      `^\\s*(?:export\\s+)?(?:default\\s+)?(?:async\\s+)?function\\*?\\s+${n}\\b`,
      `^\\s*${MODIFIERS}\\*?${n}\\s*(?:<[^>]*>)?\\(`,
      `^\\s*(?:export\\s+)?(?:const|let|var)\\s+${n}\\s*=`,
      `^\\s*(?:export\\s+)?(?:abstract\\s+)?class\\s+${n}\\b`,
      `[{,\\s]${n}\\s*[:=]\\s*(?:async\\s*)?(?:\\(|[A-Za-z_$][\\w$]*\\s*=>|function)`,
    ].join("|"),
  );
  const hits: number[] = [];
  lines.forEach((l, i) => {
    if (decl.test(l)) hits.push(i + 1);
  });
  if (hits.length === 0) return undefined;
  const js = f.lineNumber + 1;
  const after = hits.filter((h) => h >= js);
  return String(after.length > 0 ? after[0] : hits[hits.length - 1]);
}

/**
 * The hottest functions of a profile.
 *
 * @param path The `.cpuprofile` file.
 * @param root The repository root, stripped from file URLs.
 * @returns Functions by self time, the busy time (no idle) in ms, and
 * garbage-collection time in ms.
 */
export function summarizeProfile(
  path: string,
  root: string,
): { hot: Hot[]; busy: number; gc: number } {
  const p = JSON.parse(readFileSync(path, "utf8")) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  // Self time from the samples and their time deltas (µs).
  const selfUs = new Map<number, number>();
  const samples = p.samples ?? [];
  const deltas = p.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    const dt = deltas[i + 1] ?? deltas[i] ?? 0;
    selfUs.set(samples[i]!, (selfUs.get(samples[i]!) ?? 0) + dt);
  }
  const key = (f: CallFrame) => {
    const file = f.url.replace(/^file:\/\//, "").replace(root, "") ||
      "(native)";
    const line = sourceLine(f) ??
      (f.url.endsWith(".ts")
        ? `~${f.lineNumber + 1} of the emitted JS`
        : f.lineNumber + 1);
    return `${f.functionName || "(anonymous)"} (${file}:${line})`;
  };
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let busy = 0;
  let gc = 0;
  // Total time: a node's self plus its subtree, counted once per function
  // on each stack (recursion is not double counted).
  const walk = (id: number, onStack: Set<string>): number => {
    const n = byId.get(id)!;
    const k = key(n.callFrame);
    const mine = selfUs.get(id) ?? 0;
    let sum = mine;
    const pushed = !onStack.has(k);
    if (pushed) onStack.add(k);
    for (const c of n.children ?? []) sum += walk(c, onStack);
    if (pushed) onStack.delete(k);
    if (!SKIP.has(n.callFrame.functionName)) {
      self.set(k, (self.get(k) ?? 0) + mine);
      if (pushed) total.set(k, (total.get(k) ?? 0) + sum);
      busy += mine;
      if (n.callFrame.functionName === "(garbage collector)") gc += mine;
    }
    return sum;
  };
  const rootNode = p.nodes[0];
  if (rootNode !== undefined) walk(rootNode.id, new Set());
  const hot = [...self.keys()].map((k) => ({
    where: k,
    self: (self.get(k) ?? 0) / 1000,
    total: (total.get(k) ?? 0) / 1000,
  }));
  hot.sort((a, b) => b.self - a.self);
  return { hot, busy: busy / 1000, gc: gc / 1000 };
}

/** A short text report of a profile. */
export function renderProfile(path: string, root: string, top = 15): string {
  const { hot, busy, gc } = summarizeProfile(path, root);
  const pct = (ms: number) =>
    busy > 0 ? `${(100 * ms / busy).toFixed(1)}%` : "-";
  const bySelf = hot.slice(0, top);
  const byTotal = [...hot].sort((a, b) => b.total - a.total).filter((h) =>
    !h.where.startsWith("(") && !h.where.includes("(native")
  ).slice(0, top);
  return [
    `${path}: ${busy.toFixed(0)} ms busy, ${gc.toFixed(0)} ms GC`,
    "  by self time:",
    ...bySelf.map((h) =>
      `    ${pct(h.self).padStart(6)} ${
        h.self.toFixed(1).padStart(8)
      } ms  ${h.where}`
    ),
    "  by total time:",
    ...byTotal.map((h) =>
      `    ${pct(h.total).padStart(6)} ${
        h.total.toFixed(1).padStart(8)
      } ms  ${h.where}`
    ),
  ].join("\n");
}

if (import.meta.main) {
  const root = new URL("..", import.meta.url).pathname;
  for (const path of Deno.args) console.log(renderProfile(path, root));
}
