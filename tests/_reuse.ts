/**
 * The scenario of a freed port held back (`reuseDelay`), shared by the
 * one-server test and the two-server one on etcd.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { ServiceRecord } from "../mod.ts";
import type { Transport } from "../transport.ts";
import { until } from "./_helpers.ts";
import { allocateEach, greeted, type Raw } from "./_raw.ts";

/**
 * In a range of ten ports: X holds one through the server at `xPort`; Y,
 * through the one at `yPort`, takes the other nine and frees them; X's
 * connection drops (`freed` says when every server saw it go); Y asks for
 * nine again and must not get X's port; X comes back through `xPort` and
 * takes it, and Y is told of no loss. Resolves with Y's connection, which
 * holds the nine, and X's (the caller disposes of both).
 */
export async function dropAndComeBack(
  t: Transport,
  xPort: number,
  yPort: number,
  freed: () => boolean,
): Promise<{ x: Raw; y: Raw }> {
  const x = await greeted(t, xPort, { lost: true });
  const [svc] = await allocateEach(x, "svc@1.0.0", 1, 1);
  const y = await greeted(t, yPort, { lost: true });
  try {
    const first = await allocateEach(y, "other@1.0.0", 9, 1);
    assert.ok(first.every((r) => r.port !== svc!.port));
    for (const [i, r] of first.entries()) {
      await y.json({ id: 20 + i, op: "free", rid: r.id });
      assert.ok("result" in await y.next());
    }
    // X's connection drops: its port is free, the range has no other
    x.close();
    await x.closed;
    await until(freed, "X's port freed");
    // every free port is held now, the nine Y freed longest: it gets those
    const again = await allocateEach(y, "other@1.0.0", 9, 40);
    assert.ok(
      again.every((r) => r.port !== svc!.port),
      `X's port ${svc!.port} given away: ${again.map((r) => r.port)}`,
    );
    // X comes back and takes its port again: nobody is displaced
    const back = await greeted(t, xPort, { lost: true });
    await back.json({
      id: 1,
      op: "assume",
      role: "svc@1.0.0",
      port: svc!.port,
    });
    try {
      assert.equal(
        ((await back.next()).result as ServiceRecord).port,
        svc!.port,
      );
      await y.json({ id: 99, op: "ping" });
      assert.equal((await y.next()).id, 99, "Y told of no loss");
    } catch (err) {
      await back[Symbol.asyncDispose]();
      throw err;
    }
    return { x: back, y };
  } catch (err) {
    await y[Symbol.asyncDispose]();
    throw err;
  }
}
