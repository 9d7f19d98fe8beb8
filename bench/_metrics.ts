/**
 * The table's metrics (labels, units, which direction is better) and the
 * targets this package is judged against.
 *
 * @module
 */
import {
  type ImplId,
  type MetricDef,
  num,
  type Sample,
  type TargetResult,
} from "./_report.ts";
import type { Impl, Sizes } from "./_workloads.ts";

/** The metrics of the table, labelled for the sizes used. */
export function metricDefs(s: Sizes): MetricDef[] {
  const k = (n: number) =>
    n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n);
  const defs: MetricDef[] = [
    {
      key: "a.rate.1",
      label: `(a) register ${k(s.regs)}, 1 client`,
      unit: "reg/s",
      better: "higher",
    },
    {
      key: "a.rate.many",
      label: `(a) register ${k(s.regs)}, ${s.clients} clients`,
      unit: "reg/s",
      better: "higher",
    },
    {
      key: "a.rate.1.noprobe",
      label: `(a) register ${k(s.regs)}, 1 client, port probe off`,
      unit: "reg/s",
      better: "higher",
    },
  ];
  const sizes = [["small", s.small], ["regs", s.regs], ["large", s.large]];
  for (const [w, what] of [["b", "query"], ["c", "wake-up"]]) {
    for (const [size, n] of sizes) {
      for (const q of ["p50", "p99"]) {
        defs.push({
          key: `${w}.${q}.${size}`,
          label: `(${w}) ${what} ${q} @ ${k(n as number)}`,
          unit: "µs",
          better: "lower",
        });
      }
    }
  }
  for (const [size, n] of [["small", s.small], ["large", s.large]] as const) {
    for (const q of ["p50", "p99"]) {
      defs.push({
        key: `bx.${q}.${size}`,
        label: `(b) one-version query ${q} @ ${k(n)}`,
        unit: "µs",
        better: "lower",
      });
    }
  }
  defs.push(
    {
      key: "floor.p50",
      label: "raw TCP round trip p50, no seaport (floor of (b), (c))",
      unit: "µs",
      better: "info",
    },
    {
      key: "floor.p99",
      label: "raw TCP round trip p99, no seaport (floor of (b), (c))",
      unit: "µs",
      better: "info",
    },
    {
      key: "scale.b",
      label: `(b) p50 growth ${k(s.small)} → ${k(s.large)}`,
      unit: "×",
      better: "lower",
    },
    {
      key: "scale.c",
      label: `(c) p50 growth ${k(s.small)} → ${k(s.large)}`,
      unit: "×",
      better: "lower",
    },
    {
      key: "scale.bx",
      label: `(b) one-version query p50 growth ${k(s.small)} → ${k(s.large)}`,
      unit: "×",
      better: "lower",
    },
    {
      key: "bx.records.small",
      label: `(b) records per one-version query @ ${k(s.small)}`,
      unit: "count",
      better: "info",
    },
    {
      key: "bx.records.large",
      label: `(b) records per one-version query @ ${k(s.large)}`,
      unit: "count",
      better: "info",
    },
    {
      key: "b.records.small",
      label: `(b) records per query @ ${k(s.small)}`,
      unit: "count",
      better: "info",
    },
    {
      key: "b.records.large",
      label: `(b) records per query @ ${k(s.large)}`,
      unit: "count",
      better: "info",
    },
    {
      key: "d.kill",
      label: `(d) SIGKILL → ${k(s.hold)} freed`,
      unit: "ms",
      better: "lower",
    },
    {
      key: "d.kill.one",
      label:
        "(d) SIGKILL → 1 freed (the kernel ending the process: floor of the above)",
      unit: "ms",
      better: "lower",
    },
    {
      key: "d.kill.server",
      label: "(d) SIGKILL: first → last free (server side)",
      unit: "ms",
      better: "lower",
    },
    {
      key: "d.stop.default",
      label: "(d) SIGSTOP freed, default settings",
      unit: "ms",
      better: "lower",
    },
    {
      key: "d.stop.hb",
      label:
        `(d) SIGSTOP freed, heartbeat ${s.heartbeat} ms / timeout ${s.hbTimeout} ms`,
      unit: "ms",
      better: "lower",
    },
    {
      key: "e.heap.regs",
      label: `(e) server heap per reg @ ${k(s.regs)}`,
      unit: "B/reg",
      better: "lower",
    },
    {
      key: "e.rss.regs",
      label: `(e) server RSS per reg @ ${k(s.regs)}`,
      unit: "B/reg",
      better: "lower",
    },
    {
      key: "e.heap.large",
      label: `(e) server heap per reg @ ${k(s.large)}`,
      unit: "B/reg",
      better: "lower",
    },
    {
      key: "e.rss.large",
      label: `(e) server RSS per reg @ ${k(s.large)}`,
      unit: "B/reg",
      better: "lower",
    },
    {
      key: "a.rate.large",
      label: `register ${k(s.large)} (populating (e))`,
      unit: "reg/s",
      better: "higher",
    },
    {
      key: "f.back",
      label: `(f) all ${k(s.fConns * s.fPer)} back, from restart`,
      unit: "ms",
      better: "lower",
    },
    {
      key: "f.backKill",
      label: "(f) all back, from kill",
      unit: "ms",
      better: "lower",
    },
    {
      key: "f.lost",
      label: "(f) registrations lost",
      unit: "count",
      better: "exact",
      expect: 0,
    },
    {
      key: "f.dup",
      label: "(f) duplicated",
      unit: "count",
      better: "exact",
      expect: 0,
    },
    {
      key: "f.moved",
      label: "(f) came back on another port",
      unit: "count",
      better: "exact",
      expect: 0,
    },
    {
      key: "f.cpu",
      label: "(f) server CPU for recovery",
      unit: "ms",
      better: "lower",
    },
    {
      key: "f.dropped",
      label: `(f) dropped after killing ${
        s.fConns / s.fProcs
      } of ${s.fConns} clients`,
      unit: "count",
      better: "exact",
      expect: (s.fConns / s.fProcs) * s.fPer,
    },
    {
      key: "f.exact",
      label: "(f) exactly their registrations dropped",
      unit: "yes/no",
      better: "exact",
      expect: 1,
    },
  );
  return defs;
}

/** Judges the medians against the targets. */
export function targets(
  cells: Map<string, Partial<Record<ImplId, Sample | undefined>>>,
  impls: Impl[],
  s: Sizes,
): TargetResult[] {
  const ours = impls.filter((i) => i.ours && i.launch !== undefined).map((i) =>
    i.id
  );
  const v = (key: string, i: ImplId) => cells.get(key)?.[i];
  const show = (key: string, i: ImplId, unit: MetricDef["unit"]) => {
    const x = v(key, i);
    if (x === undefined) return "—";
    if (typeof x === "number") {
      return `${
        x.toLocaleString("en-US", { maximumFractionDigits: 1 })
      } ${unit}`;
    }
    return "gt" in x ? `> ${x.gt} ${unit}` : `n/a: ${x.na}`;
  };
  const out: TargetResult[] = [];
  const add = (
    id: string,
    text: string,
    check: (i: ImplId) => { ok: boolean | undefined; detail: string },
  ) => {
    const t: TargetResult = { id, text, status: {}, detail: {} };
    for (const i of ours) {
      const { ok, detail } = check(i);
      t.status[i] = ok === undefined ? "n/a" : ok ? "met" : "not met";
      t.detail[i] = detail;
    }
    out.push(t);
  };
  const all = (...xs: (boolean | undefined)[]) =>
    xs.some((x) => x === undefined) ? undefined : xs.every(Boolean);
  const le = (key: string, i: ImplId, max: number) => {
    const x = v(key, i);
    if (typeof x === "object" && x !== null && "gt" in x) {
      return x.gt <= max ? undefined : false;
    }
    const n = num(x);
    return n === undefined ? undefined : n <= max;
  };
  const ge = (key: string, i: ImplId, min: number) => {
    const n = num(v(key, i));
    return n === undefined ? undefined : n >= min;
  };
  add("a", "≥ 200,000 registrations/s with 1 client and with many", (i) => ({
    ok: all(ge("a.rate.1", i, 200_000), ge("a.rate.many", i, 200_000)),
    detail: `${show("a.rate.1", i, "reg/s")}; ${
      show("a.rate.many", i, "reg/s")
    }`,
  }));
  add("b", "query p99 ≤ 300 µs", (i) => ({
    ok: le("b.p99.regs", i, 300),
    detail: show("b.p99.regs", i, "µs"),
  }));
  add("c", "wake-up p50 ≤ 150 µs and p99 ≤ 500 µs", (i) => ({
    ok: all(le("c.p50.regs", i, 150), le("c.p99.regs", i, 500)),
    detail: `p50 ${show("c.p50.regs", i, "µs")}; p99 ${
      show("c.p99.regs", i, "µs")
    }`,
  }));
  add("d", `SIGKILL cleanup of ${s.hold} ≤ 3 ms`, (i) => ({
    ok: le("d.kill", i, 3),
    detail: show("d.kill", i, "ms"),
  }));
  add(
    "d-hb",
    `half-open freed within the timeout + 10 % (${
      Math.round(s.hbTimeout * 1.1)
    } ms)`,
    (i) => ({
      ok: le("d.stop.hb", i, Math.round(s.hbTimeout * 1.1)),
      detail: show("d.stop.hb", i, "ms"),
    }),
  );
  add(
    "e",
    `≤ 250 B of heap per registration at ${s.large.toLocaleString("en-US")}`,
    (i) => ({
      ok: le("e.heap.large", i, 250),
      detail: show("e.heap.large", i, "B/reg"),
    }),
  );
  const victims = (s.fConns / s.fProcs) * s.fPer;
  add(
    "f",
    `all back ≤ 1.5 s, 0 lost, 0 duplicated, server CPU ≤ 0.5 s; killing ${
      s.fConns / s.fProcs
    } of ${s.fConns} clients drops exactly their ${victims}`,
    (i) => ({
      ok: all(
        le("f.back", i, 1500),
        le("f.lost", i, 0),
        le("f.dup", i, 0),
        le("f.cpu", i, 500),
        all(le("f.dropped", i, victims), ge("f.dropped", i, victims)),
        ge("f.exact", i, 1),
      ),
      detail: `back ${show("f.back", i, "ms")}, lost ${
        show("f.lost", i, "count")
      }, dup ${show("f.dup", i, "count")}, CPU ${
        show("f.cpu", i, "ms")
      }, dropped ${show("f.dropped", i, "count")}`,
    }),
  );
  add(
    "scale",
    `(b) and (c) p50 grow < 2× from ${s.small} to ${s.large}`,
    (i) => {
      const b = num(v("scale.b", i));
      const c = num(v("scale.c", i));
      return {
        ok: b === undefined || c === undefined ? undefined : b < 2 && c < 2,
        detail: `(b) ${show("scale.b", i, "×")}; (c) ${
          show("scale.c", i, "×")
        }; (b) of one version ${show("scale.bx", i, "×")}`,
      };
    },
  );
  // against seaport 2.0.9 in the same run: ours / theirs
  const ratio = (key: string, i: ImplId) => {
    const o = num(v(key, i));
    const t = num(v(key, "theirs"));
    return o === undefined || t === undefined || t === 0 ? undefined : o / t;
  };
  const rge = (key: string, i: ImplId, min: number) => {
    const x = ratio(key, i);
    return x === undefined ? undefined : x >= min;
  };
  const rle = (key: string, i: ImplId, max: number) => {
    const x = ratio(key, i);
    return x === undefined ? undefined : x <= max;
  };
  const showRatio = (key: string, i: ImplId) => {
    const x = ratio(key, i);
    return x === undefined ? "—" : `${x.toFixed(2)}×`;
  };
  add(
    "a×",
    "vs seaport 2.0.9, probe on: 1 client ≥ 2×, 50 clients ≥ 10×",
    (i) => ({
      ok: all(rge("a.rate.1", i, 2), rge("a.rate.many", i, 10)),
      detail: `${showRatio("a.rate.1", i)}; ${showRatio("a.rate.many", i)}`,
    }),
  );
  add(
    "c×",
    `wake-up vs seaport 2.0.9 at ${
      s.regs.toLocaleString("en-US")
    }: p50 ≤ 0.5×; p99 ≤ 0.5× on Node, ≤ 500 µs on Deno`,
    (i) => ({
      ok: all(
        rle("c.p50.regs", i, 0.5),
        i === "ours-deno"
          ? le("c.p99.regs", i, 500)
          : rle("c.p99.regs", i, 0.5),
      ),
      detail: `p50 ${showRatio("c.p50.regs", i)}; p99 ${
        i === "ours-deno"
          ? show("c.p99.regs", i, "µs")
          : showRatio("c.p99.regs", i)
      }`,
    }),
  );
  add(
    "e×",
    `heap per registration vs seaport 2.0.9 ≤ 0.7× at ${
      s.regs.toLocaleString("en-US")
    } and at ${s.large.toLocaleString("en-US")}`,
    (i) => ({
      ok: all(rle("e.heap.regs", i, 0.7), rle("e.heap.large", i, 0.7)),
      detail: `${showRatio("e.heap.regs", i)}; ${showRatio("e.heap.large", i)}`,
    }),
  );
  return out;
}
