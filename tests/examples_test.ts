/**
 * The README's quick example, examples/server.ts and examples/client.ts, run
 * as a user runs them: with `deno run` here, and from the npm package (where
 * npm_build.ts strips their types into examples/*.js beside the tests) with
 * Node or Bun, whichever runs the tests.
 *
 * @module
 */
import { test } from "node:test";
import process from "node:process";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { runtime, serve, transports, within } from "./_helpers.ts";

/** `.ts` in a clone, `.js` where these tests were compiled. */
const ext = import.meta.url.endsWith(".ts") ? "ts" : "js";

function run(name: string, port: number) {
  const url = new URL(`../examples/${name}.${ext}`, import.meta.url);
  const path = fileURLToPath(url);
  const args = runtime === "deno" ? ["run", "-A", path] : [path];
  const child = spawn(process.execPath, args, {
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
  async () => {
    await using s = await serve(transports()[0]!, { secret: "beep boop" });
    const client = run("client", s.port);
    const server = run("server", s.port);
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

test(
  "a script outside the clone imports mod.ts by path and runs with a plain deno run -A",
  {
    skip: runtime === "deno"
      ? false
      : "importing mod.ts by path is how Deno users run a clone; Node and Bun use the package",
  },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "seaport-outside-"));
    try {
      const mod = new URL("../mod.ts", import.meta.url).href;
      const script = join(dir, "uses_seaport.ts");
      writeFileSync(
        script,
        `import { connect, createServer, hostPort } from ${JSON.stringify(mod)};
const server = createServer();
const { port } = await server.listen(0, "127.0.0.1");
const ports = connect("127.0.0.1", port);
await ports.service("web@1.2.3");
const [r] = await ports.get("web@1.x");
console.log(hostPort(r!));
await ports.close();
await server.close();
`,
      );
      const exec = (globalThis as { Deno?: { execPath(): string } }).Deno!
        .execPath();
      const child = spawn(exec, ["run", "-A", script], {
        cwd: dir, // no deno.json here or above
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      let err = "";
      child.stdout!.on("data", (d) => out += d);
      child.stderr!.on("data", (d) => err += d);
      const code = await within(
        new Promise<number | null>((r) => child.on("exit", r)),
        60_000,
        "the outside script",
      );
      assert.equal(code, 0, err);
      assert.match(out, /^127\.0\.0\.1:\d+\n$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
