/**
 * The README's "Several servers" command: examples/cluster.sh starts a
 * three-member etcd and three seaport servers on this machine, each server
 * answers a query about a service registered through another, and SIGTERM
 * stops every process.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { connect } from "../mod.ts";
import { cliCommand, root, start } from "./_cli.ts";
import { etcdBinary, etcdMissing } from "./_etcd.ts";
import { freeBlock, within } from "./_helpers.ts";
import { defaultTransport } from "../transport.ts";

const script = join(root, "examples", "cluster.sh");
const cli = cliCommand();
const skip = etcdMissing ||
  (typeof cli === "string" ? cli : false) ||
  (!existsSync(script) ? "examples/cluster.sh is not here" : false) ||
  (process.platform === "win32" ? "needs bash" : false);

test(
  "examples/cluster.sh starts three etcd members and three seaport servers, each answers, and SIGTERM stops them all",
  { skip },
  async () => {
    const t = defaultTransport();
    const port = await freeBlock(t, 3);
    const etcdPort = await freeBlock(t, 22);
    await using proc = start(["bash", script], [], {
      SEAPORT: (cli as string[]).join(" "),
      ETCD: etcdBinary,
      PORT: String(port),
      ETCD_PORT: String(etcdPort),
    });
    await within(
      proc.line(/^cluster ready: seaport servers (\S+) on etcd (\S+)/),
      30_000,
      "the cluster",
    );
    const clients = [0, 1, 2].map((i) => connect("127.0.0.1", port + i));
    try {
      const web = await clients[0]!.service("web@1.0.0");
      for (const [i, c] of clients.entries()) {
        const [found] = await within(c.get("web"), 5000, `server ${i}'s get`);
        assert.equal(found?.port, web, `through server ${i}`);
      }
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
    proc.signal("SIGTERM");
    const { code } = await within(proc.closed, 15_000, "the cluster to stop");
    assert.equal(code, 0, proc.text("stderr"));
    assert.match(proc.text("stdout"), /cluster stopped/);
    // nothing of it listens any more
    for (const p of [port, port + 1, port + 2, etcdPort, etcdPort + 10]) {
      const l = await t.listen({ hostname: "127.0.0.1", port: p });
      l.close();
    }
  },
);
