import { test } from "node:test";
import process from "node:process";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { denoTransport } from "../transport.ts";
import { runtime, serve, within } from "./_helpers.ts";

const skip = runtime === "deno"
  ? false
  : "the examples are TypeScript run with Deno; the Node suite covers the same API";

function run(file: string, port: number) {
  const path = fileURLToPath(new URL(`../examples/${file}`, import.meta.url));
  const exec = (globalThis as { Deno?: { execPath(): string } }).Deno!
    .execPath();
  const child = spawn(exec, ["run", "-A", path], {
    env: { ...process.env, SEAPORT_PORT: String(port) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout!.on("data", (d) => out += d);
  const exited = new Promise<number | null>((r) => child.on("exit", r));
  return { child, exited, output: () => out };
}

test(
  "the README's quick example works, client started first",
  { skip },
  async () => {
    await using s = await serve(denoTransport(), { secret: "beep boop" });
    const client = run("client.ts", s.port);
    const server = run("server.ts", s.port);
    try {
      assert.equal(await within(client.exited, 20000, "client.ts"), 0);
      assert.equal(client.output(), "beep boop\n");
      assert.equal(s.server.query("web")[0]!.version, "1.2.3");
    } finally {
      server.child.kill("SIGTERM");
      client.child.kill("SIGTERM");
      await within(server.exited, 5000, "server.ts to stop");
    }
  },
);
