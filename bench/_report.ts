/**
 * Results of the benchmark: samples, medians, ratios, the targets for this
 * package, the previous run's figures beside them, and the text, Markdown
 * and JSON renderings.
 *
 * @module
 */
import { type Section, sectionMarkdown, sectionText } from "./_sections.ts";

/** One run's value of a metric: a number, a capped wait, or not applicable. */
export type Sample = number | { gt: number } | { na: string };

/**
 * Whether bigger or smaller values are better; `exact` for must-be counts;
 * `info` for context without a direction.
 */
export type Better = "higher" | "lower" | "exact" | "info";

/** A metric of the table. */
export interface MetricDef {
  /** A stable key, used in the JSON output. */
  key: string;
  /** The row label. */
  label: string;
  /** The unit shown after the label. */
  unit: "reg/s" | "µs" | "ms" | "B/reg" | "count" | "yes/no" | "×";
  /** Which direction is better. */
  better: Better;
  /** For `exact`: the value that is correct. */
  expect?: number;
}

/** The implementations compared. */
export type ImplId = "ours-deno" | "ours-node" | "theirs";

/** Column headers. */
export const IMPL_LABELS: Record<ImplId, string> = {
  "ours-deno": "ours (Deno)",
  "ours-node": "ours (Node)",
  theirs: "seaport 2.0.9 (Node)",
};

/** A metric's value for one implementation, over every run. */
export interface Cell {
  /** The median, or what stands in for it. */
  median: Sample | undefined;
  /** Every run's sample. */
  samples: Sample[];
}

/** The median of the samples; capped waits count as larger than any number. */
export function median(samples: Sample[]): Sample | undefined {
  const nums = samples.filter((s) => typeof s === "number" || "gt" in s);
  if (nums.length === 0) {
    const na = samples.find((s) => typeof s === "object" && "na" in s);
    return na;
  }
  const key = (s: Sample) =>
    typeof s === "number" ? s : "gt" in s ? Number.POSITIVE_INFINITY : NaN;
  const sorted = [...nums].sort((a, b) => key(a) - key(b));
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

/** A number from a sample, if it is one. */
export function num(s: Sample | undefined): number | undefined {
  return typeof s === "number" && Number.isFinite(s) ? s : undefined;
}

function group(n: number, digits = 0): string {
  return n.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** Formats a value in a unit. */
export function formatValue(v: number, unit: MetricDef["unit"]): string {
  switch (unit) {
    case "reg/s":
      return group(v);
    case "µs":
      return v < 100 ? group(v, 1) : group(v);
    case "ms":
      return v < 10 ? group(v, 2) : v < 100 ? group(v, 1) : group(v);
    case "B/reg":
      return group(v);
    case "count":
      return group(v);
    case "yes/no":
      return v === 1 ? "yes" : "no";
    case "×":
      return `${group(v, 2)}×`;
  }
}

/** Formats a sample in a unit. */
export function formatSample(
  s: Sample | undefined,
  unit: MetricDef["unit"],
): string {
  if (s === undefined) return "—";
  if (typeof s === "number") {
    return Number.isFinite(s) ? formatValue(s, unit) : "—";
  }
  if ("gt" in s) return `> ${formatValue(s.gt, unit)}`;
  return `n/a (${s.na})`;
}

/** ours/theirs, when both are numbers and the metric has a direction. */
export function ratio(
  def: MetricDef,
  ours: Sample | undefined,
  theirs: Sample | undefined,
): string {
  if (def.better === "exact" || def.better === "info") return "—";
  const o = num(ours);
  if (o === undefined) return "—";
  if (theirs !== undefined && typeof theirs === "object" && "gt" in theirs) {
    return def.better === "lower" ? `< ${group(o / theirs.gt, 3)}×` : "—";
  }
  const t = num(theirs);
  if (t === undefined || t === 0) return "—";
  const r = o / t;
  return r >= 100
    ? `${group(r)}×`
    : r >= 10
    ? `${group(r, 1)}×`
    : r >= 0.1
    ? `${group(r, 2)}×`
    : `${group(r, 4)}×`;
}

/** A target for this package, checked against the medians. */
export interface TargetResult {
  /** `a`..`f`, `scale`. */
  id: string;
  /** What is required. */
  text: string;
  /** `met`, `not met`, or `n/a` per implementation of ours. */
  status: Partial<Record<ImplId, "met" | "not met" | "n/a">>;
  /** The figures it was judged on. */
  detail: Partial<Record<ImplId, string>>;
}

/** Everything a run produced. */
export interface Report {
  /** When the run started (ISO 8601). */
  date: string;
  /** The machine. */
  machine: {
    nproc: number;
    cpu: string;
    memory: string;
    os: string;
    /** 1-minute load averages at the start and at the end of the run. */
    load: [number, number];
  };
  /** Runtime versions. */
  runtimes: Record<string, string>;
  /** The command line that reproduces the run. */
  command: string;
  /** The git revision measured (`+dirty` when core files had local changes). */
  revision: string;
  /** Runs per metric. */
  runs: number;
  /** Quick (smoke) sizes? */
  quick: boolean;
  /** The sizes used. */
  sizes: Record<string, number>;
  /** Which implementations ran, or why not. */
  impls: Record<ImplId, { ran: boolean; note?: string }>;
  /** The metrics, in table order. */
  metrics: (MetricDef & { cells: Partial<Record<ImplId, Cell>> })[];
  /** The targets. */
  targets: TargetResult[];
  /** Remarks (skipped parts, failures, caveats). */
  notes: string[];
  /** Wall-clock seconds the run took. */
  seconds: number;
  /** The sections beside the table: etcd, cold start. */
  sections?: Section[];
  /** The previous run's medians, shown beside this run's. */
  previous?: Previous;
}

/** The medians of an earlier run, to compare with. */
export interface Previous {
  /** The file they were read from. */
  file: string;
  /** When that run was made. */
  date: string;
  /** Its revision. */
  revision: string;
  /** Its medians, by metric key and implementation. */
  medians: Record<string, Partial<Record<ImplId, Sample | undefined>>>;
}

/** A change beyond this fraction is marked better or WORSE. */
export const NOISE = 0.1;

/** What of `earlier` to show beside a run: its medians. */
export function previousOf(earlier: Report, file: string): Previous {
  return {
    file,
    date: earlier.date,
    revision: earlier.revision,
    medians: Object.fromEntries(
      earlier.metrics.map((m) => [
        m.key,
        Object.fromEntries(
          Object.entries(m.cells).map(([i, c]) => [i, c?.median]),
        ),
      ]),
    ),
  };
}

/**
 * The previous figure and the change to it: `26,209 (+77%)`, marked `WORSE`
 * past the noise for the metric's direction.
 */
export function compareCell(
  def: MetricDef,
  now: Sample | undefined,
  before: Sample | undefined,
): string {
  if (before === undefined) return "—";
  const was = formatSample(before, def.unit);
  const a = num(now);
  const b = num(before);
  if (a === undefined || b === undefined || b === 0) return was;
  if (def.better === "exact") {
    return a === b
      ? was
      : `${was} (changed${a !== def.expect ? ", WORSE" : ""})`;
  }
  const change = (a - b) / Math.abs(b);
  const pct = `${change >= 0 ? "+" : "−"}${Math.abs(change * 100).toFixed(0)}%`;
  if (def.better === "info" || Math.abs(change) <= NOISE) {
    return `${was} (${pct})`;
  }
  const worse = def.better === "higher" ? change < 0 : change > 0;
  return `${was} (${pct} ${worse ? "WORSE" : "better"})`;
}

const OURS: ImplId[] = ["ours-deno", "ours-node"];

function cols(report: Report): ImplId[] {
  return (Object.keys(IMPL_LABELS) as ImplId[]).filter((i) =>
    report.impls[i]?.ran
  );
}

function rows(report: Report): string[][] {
  const impls = cols(report);
  const ours = impls.filter((i) => OURS.includes(i));
  const head = [
    "metric",
    ...impls.map((i) => IMPL_LABELS[i]),
    ...(impls.includes("theirs")
      ? ours.map((i) => `${i === "ours-deno" ? "Deno" : "Node"}/theirs`)
      : []),
    "better",
    ...(report.previous ? impls.map((i) => `previous ${IMPL_LABELS[i]}`) : []),
  ];
  const out = [head];
  for (const m of report.metrics) {
    const cells = impls.map((i) => formatSample(m.cells[i]?.median, m.unit));
    const ratios = impls.includes("theirs")
      ? ours.map((i) => ratio(m, m.cells[i]?.median, m.cells.theirs?.median))
      : [];
    const better = m.better === "higher"
      ? "higher"
      : m.better === "lower"
      ? "lower"
      : m.better === "info"
      ? ""
      : `= ${m.expect ?? 0}`;
    const prev = report.previous;
    const before = prev === undefined
      ? []
      : impls.map((i) =>
        compareCell(m, m.cells[i]?.median, prev.medians[m.key]?.[i])
      );
    out.push([
      `${m.label} [${m.unit}]`,
      ...cells,
      ...ratios,
      better,
      ...before,
    ]);
  }
  return out;
}

/** The table as aligned plain text. */
export function renderText(report: Report): string {
  const r = rows(report);
  const widths = r[0]!.map((_, c) =>
    Math.max(...r.map((row) => row[c]!.length))
  );
  const line = (row: string[]) =>
    row.map((cell, c) =>
      c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)
    )
      .join("  ");
  const out = [
    `seaport benchmarks, ${report.date}, median of ${report.runs} run(s)${
      report.quick ? " (quick sizes)" : ""
    }`,
    `revision ${report.revision}; ${report.machine.nproc} cores, ${report.machine.cpu}, load ${
      report.machine.load.map((l) => l.toFixed(2)).join(" → ")
    }; ${
      Object.entries(report.runtimes).map(([k, v]) => `${k} ${v}`).join(", ")
    }`,
    "",
    line(r[0]!),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...r.slice(1).map(line),
    "",
    "Ratio = ours / theirs; the `better` column says which direction wins.",
    ...previousLegend(report),
    "",
    "Targets (ours):",
    ...report.targets.map((t) =>
      `  ${t.id.padEnd(6)} ${t.text}\n         ${
        (Object.keys(t.status) as ImplId[]).map((i) =>
          `${IMPL_LABELS[i]}: ${t.status[i]} (${t.detail[i]})`
        ).join("; ")
      }`
    ),
  ];
  for (const sec of report.sections ?? []) out.push("", sectionText(sec));
  if (report.notes.length > 0) {
    out.push("", "Notes:", ...report.notes.map((n) => `  - ${n}`));
  }
  out.push("", `Took ${report.seconds.toFixed(0)} s.`);
  return out.join("\n");
}

/** The table and targets as Markdown. */
export function renderMarkdown(report: Report): string {
  const r = rows(report);
  const esc = (s: string) => s.replaceAll("|", "\\|");
  const out = [
    `| ${r[0]!.map(esc).join(" | ")} |`,
    `|${r[0]!.map((_, c) => c === 0 ? "---" : "---:").join("|")}|`,
    ...r.slice(1).map((row) => `| ${row.map(esc).join(" | ")} |`),
    "",
    "| target | " +
    OURS.filter((i) => report.impls[i]?.ran).map((i) => IMPL_LABELS[i]).join(
      " | ",
    ) + " |",
    "|---|" +
    OURS.filter((i) => report.impls[i]?.ran).map(() => "---").join("|") + "|",
    ...report.targets.map((t) =>
      `| (${t.id}) ${esc(t.text)} | ` +
      OURS.filter((i) => report.impls[i]?.ran).map((i) =>
        `**${t.status[i] ?? "n/a"}** (${esc(t.detail[i] ?? "")})`
      ).join(" | ") + " |"
    ),
  ];
  const legend = previousLegend(report);
  if (legend.length > 0) out.splice(r.length + 1, 0, "", ...legend);
  for (const sec of report.sections ?? []) out.push("", sectionMarkdown(sec));
  if (report.notes.length > 0) {
    out.push("", ...report.notes.map((n) => `- ${n}`));
  }
  return out.join("\n");
}

/** What the `previous` columns are. */
function previousLegend(report: Report): string[] {
  const p = report.previous;
  if (p === undefined) return [];
  return [
    `previous = the run of ${p.date} (revision ${p.revision}) from ${p.file}; the change is marked "WORSE" or "better" past ±${
      NOISE * 100
    }%.`,
  ];
}
