import { test } from "node:test";
import assert from "node:assert/strict";
import { IdTable, PortSlots, PortTable } from "../registry.ts";

/** A small deterministic generator, so a failure can be replayed. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

test("IdTable finds, replaces and deletes like a Map, through growth and shrinking", () => {
  const rnd = random(7);
  const table = new IdTable<{ id: string }>();
  const model = new Map<string, { id: string }>();
  for (let step = 0; step < 20_000; step++) {
    // Few distinct ids, so that adds, replaces and deletes all happen often;
    // the working set swings between empty and full.
    const phase = Math.floor(step / 2500) % 2 === 0 ? 0.7 : 0.3;
    const id = `k${Math.floor(rnd() * 600).toString(36)}`;
    if (rnd() < phase) {
      const rec = { id };
      table.add(rec);
      model.set(id, rec);
    } else {
      const known = model.get(id);
      assert.equal(table.delete(known ?? { id }), known !== undefined);
      model.delete(id);
    }
    assert.equal(table.size, model.size);
    if (step % 97 === 0) {
      for (const [k, v] of model) assert.equal(table.get(k), v);
      assert.equal(table.get("absent"), undefined);
      assert.deepEqual(
        new Set(table.values()),
        new Set(model.values()),
      );
    }
  }
});

test("IdTable.delete removes only that very record", () => {
  const table = new IdTable<{ id: string }>();
  const a = { id: "x" };
  table.add(a);
  assert.equal(table.delete({ id: "x" }), false);
  assert.equal(table.get("x"), a);
  assert.equal(table.delete(a), true);
  assert.equal(table.size, 0);
});

test("PortTable answers like a Map in its sparse and dense forms, ports outside the range included", () => {
  const rnd = random(11);
  const table = new PortTable<string>(100, 199, 100);
  const model = new Map<number, string>();
  for (let step = 0; step < 20_000; step++) {
    const phase = Math.floor(step / 1500) % 2 === 0 ? 0.75 : 0.25;
    const port = 90 + Math.floor(rnd() * 120); // 90-209: some outside
    if (rnd() < phase) {
      const v = `r${step}`;
      table.set(port, v);
      model.set(port, v);
    } else {
      table.delete(port);
      model.delete(port);
    }
    let inside = 0;
    for (const p of model.keys()) if (p >= 100 && p <= 199) inside++;
    assert.equal(table.inRange, inside);
    if (step % 53 === 0) {
      for (let p = 85; p < 215; p++) {
        assert.equal(table.get(p), model.get(p), `port ${p} at step ${step}`);
        assert.equal(table.has(p), model.has(p));
      }
    }
  }
});

test("PortSlots keeps a number, a flag and a reference per port like a Map, through growth and shrinking", () => {
  const rnd = random(5);
  const table = new PortSlots<string>();
  type Row = { n: number; flag: boolean; ref: string | undefined };
  const model = new Map<number, Row>();
  for (let step = 0; step < 30_000; step++) {
    // A few hundred ports, in a run and scattered over 1-65535; the working
    // set swings between empty and full.
    const phase = Math.floor(step / 3000) % 2 === 0 ? 0.7 : 0.3;
    const port = rnd() < 0.5
      ? 10_000 + Math.floor(rnd() * 400)
      : 1 + Math.floor(rnd() * 65535);
    const r = rnd();
    if (r < phase) {
      const row: Row = {
        n: 2 ** 40 + step, // past 32 bits: kept exactly
        flag: rnd() < 0.3,
        ref: rnd() < 0.5 ? undefined : `r${step % 3}`,
      };
      table.set(port, row.n, row.flag, row.ref);
      model.set(port, row);
    } else if (r < phase + 0.05) {
      const ref = rnd() < 0.5 ? undefined : "changed";
      const row = model.get(port);
      assert.equal(table.setRef(port, ref), row !== undefined);
      if (row !== undefined) row.ref = ref;
    } else {
      assert.equal(table.delete(port), model.has(port));
      model.delete(port);
    }
    assert.equal(table.size, model.size);
    if (step % 101 === 0) {
      for (const [p, row] of model) {
        assert.equal(table.has(p), true);
        assert.equal(table.number(p), row.n);
        assert.equal(table.flag(p), row.flag);
        assert.equal(table.ref(p), row.ref);
      }
      assert.equal(table.has(65536), false);
      assert.equal(table.number(65536), undefined);
      assert.deepEqual(
        new Map(table.entries()),
        new Map([...model].map(([p, row]) => [p, row.n])),
      );
    }
  }
});
