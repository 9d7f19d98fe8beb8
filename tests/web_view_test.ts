/**
 * The web view in a real headless Chromium (Debian's `/usr/bin/chromium`,
 * driven by `playwright-core`): it loads without console errors, shows a
 * registration without a reload and drops it when freed, filters with the
 * server's own pattern parser, reconnects after the server restarts, works at
 * phone width, and signs in with the token. Skipped, with the reason, where
 * Chromium or playwright-core is missing.
 *
 * `SEAPORT_SCREENSHOTS=1` also writes the wide and narrow screenshots into
 * docs/ for the README (otherwise they go to a temporary directory).
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { seaport, type ServerOptions } from "../mod.ts";
import { type HttpTestServer, serveHttp } from "./_http.ts";
import { skip } from "./_helpers.ts";

const CHROMIUM = "/usr/bin/chromium";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const here = dirname(fileURLToPath(import.meta.url));

type Playwright = typeof import("playwright-core");
type Context = Awaited<
  ReturnType<Playwright["chromium"]["launchPersistentContext"]>
>;
type Page = Awaited<ReturnType<Context["newPage"]>>;

/** playwright-core, or why it cannot be used here. */
async function browserLibrary(): Promise<Playwright | string> {
  if (!existsSync(CHROMIUM)) {
    return `${CHROMIUM} is missing (Debian package chromium)`;
  }
  try {
    return await import("playwright-core");
  } catch (err) {
    return `playwright-core cannot be loaded (${(err as Error).message})`;
  }
}

/** A fresh Chromium profile and a page that records console errors. */
async function browse(pw: Playwright) {
  const profile = mkdtempSync(join(tmpdir(), "seaport-chromium-"));
  const context = await pw.chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 800 },
  });
  context.setDefaultTimeout(10_000);
  const page = context.pages()[0] ?? await context.newPage();
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (err) => errors.push(String(err)));
  return {
    page,
    errors,
    async [Symbol.asyncDispose]() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Where screenshots go: docs/ when asked, else a temporary directory. */
function shotDir(): string {
  return process.env.SEAPORT_SCREENSHOTS
    ? join(here, "..", "docs")
    : mkdtempSync(join(tmpdir(), "seaport-shots-"));
}

async function rows(page: Page): Promise<string[]> {
  return await page.$$eval(
    "#map tr[data-id]:not(.removed)",
    (trs) => trs.map((tr) => tr.getAttribute("data-role") ?? ""),
  );
}

/**
 * Polls the page until `check` holds, failing after `ms` with `what`. (The
 * page's Content-Security-Policy forbids eval, and with it Playwright's
 * waitForFunction; $$eval and locators still work.)
 */
async function pageUntil(
  page: Page,
  check: () => Promise<boolean>,
  what: () => Promise<string>,
  ms = 10_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${ms} ms: ${await what()}`);
    }
    await page.waitForTimeout(20);
  }
}

/** Waits until the visible rows are exactly `want` (role@version each). */
async function waitRows(page: Page, want: string[]): Promise<void> {
  const sorted = [...want].sort().join(",");
  const seen = async () => (await rows(page)).sort().join(",");
  await pageUntil(
    page,
    async () => (await seen()) === sorted,
    async () => `rows are "${await seen()}", not "${sorted}"`,
  );
}

/** Starts a server on `httpPort`, retrying while the old one's port lingers. */
async function restartOn(
  httpPort: number,
  options: ServerOptions,
): Promise<HttpTestServer> {
  for (let attempt = 0;; attempt++) {
    try {
      return await serveHttp(options, httpPort);
    } catch (err) {
      if (attempt >= 50) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

test("the web view shows registrations live, filters them, reconnects and fits a phone", async (t) => {
  const pw = await browserLibrary();
  if (typeof pw === "string") return skip(t, pw);
  const range = { range: { "*": [10000, 10039] as const } };
  let s = await serveHttp(range);
  try {
    await using b = await browse(pw);
    const { page, errors } = b;
    const res = await page.goto(`${s.base}/`);
    assert.equal(res?.status(), 200);
    await page.locator("#status.live").waitFor();
    await waitRows(page, []);
    assert.match(await page.locator("#map tbody").innerText(), /No services/);

    // a registration appears without a reload, highlighted
    const c = s.client();
    const port = await c.service("web@1.2.3", { zone: "eu" });
    const row = page.locator('#map tr[data-role="web@1.2.3"]');
    await row.waitFor();
    assert.match(await row.getAttribute("class") ?? "", /added/);
    assert.match(
      await row.innerText(),
      new RegExp(`127\\.0\\.0\\.1\\s+${port}`),
    );
    assert.match(await row.innerText(), /"zone":"eu"/);
    assert.match(
      await page.locator("#feed").innerText(),
      /allocate web@1\.2\.3/,
    );
    assert.match(
      await page.locator("#hosts li[data-host='127.0.0.1']").innerText(),
      /1 of 40 ports in use/,
    );

    // and goes when freed
    await c.free(port);
    await row.waitFor({ state: "detached" });
    assert.match(await page.locator("#feed").innerText(), /free web@1\.2\.3/);

    // the filter narrows the rows, with the server's parser
    await c.service("web@1.2.3", { zone: "eu" });
    await c.service("web@2.0.0");
    await c.assume("db@5.1.0", 20555);
    const staging = seaport("staging").connect("127.0.0.1", s.port);
    await staging.service("web@1.3.0", { build: "a1f" });
    await waitRows(page, ["web@1.2.3", "web@2.0.0", "db@5.1.0", "web@1.3.0"]);
    const filter = page.getByLabel("Filter by pattern");
    // by keyboard: the filter is the first stop
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate("document.activeElement.id"), "filter");
    await page.keyboard.type("web@1.x");
    await waitRows(page, ["web@1.2.3", "web@1.3.0"]);
    // a registration that matches shows up under the filter too
    await c.service("web@1.9.0");
    await waitRows(page, ["web@1.2.3", "web@1.3.0", "web@1.9.0"]);
    await filter.fill("web@>=banana");
    await page.locator("#filter-error", { hasText: "Invalid pattern" })
      .waitFor();
    assert.match(
      await page.locator("#filter-error").innerText(),
      /"web@>=banana": ">=banana" is not a semver range/,
    );
    assert.equal(await filter.getAttribute("aria-invalid"), "true");
    await filter.fill("");
    await waitRows(page, [
      "web@1.2.3",
      "web@2.0.0",
      "db@5.1.0",
      "web@1.3.0",
      "web@1.9.0",
    ]);
    assert.equal(await page.locator("#filter-error").innerText(), "");

    // accessible markup: a real table with headers, grouped by role@version
    assert.equal(await page.locator("#map thead th[scope=col]").count(), 5);
    assert.deepEqual(
      await page.$$eval(
        "#map tbody th[scope=rowgroup]",
        (ths) => ths.map((th) => th.textContent),
      ),
      [
        "db@5.1.0 (1)",
        "web@1.2.3 (1)",
        "web@1.3.0 (1)",
        "web@1.9.0 (1)",
        "web@2.0.0 (1)",
      ],
    );
    assert.equal(
      await page.locator("#hosts svg[role=img]").getAttribute("aria-label"),
      "127.0.0.1: 4 of 40 ports in use (10000-10039)", // db is outside
    );

    // screenshots for the README: wide, then phone width
    const highlighted = page.locator("#map tr.added, #map tr.removed");
    await pageUntil(
      page,
      async () => (await highlighted.count()) === 0,
      () => Promise.resolve("the highlights to fade"),
    );
    const dir = shotDir();
    await page.screenshot({ path: join(dir, "web-view.png") });
    await page.setViewportSize({ width: 390, height: 844 });
    const fits = await page.evaluate(
      "document.documentElement.scrollWidth <= window.innerWidth",
    );
    assert.ok(fits, "no sideways scrolling at 390 px");
    assert.ok(await page.locator('#map tr[data-role="db@5.1.0"]').isVisible());
    assert.ok(await filter.isVisible());
    await page.screenshot({ path: join(dir, "web-view-narrow.png") });
    for (const f of ["web-view.png", "web-view-narrow.png"]) {
      assert.ok(statSync(join(dir, f)).size < 400_000, `${f} is small`);
    }
    if (!process.env.SEAPORT_SCREENSHOTS) {
      rmSync(dir, { recursive: true, force: true });
    }
    await page.setViewportSize({ width: 1280, height: 800 });

    // the stream drops with the server and comes back with the new one
    await staging.close();
    const httpPort = s.httpPort;
    await s[Symbol.asyncDispose]();
    await page.locator("#status.reconnecting, #status.offline").waitFor();
    s = await restartOn(httpPort, range);
    await page.locator("#status.live").waitFor({ timeout: 15_000 });
    await waitRows(page, []);
    await s.client().service("cache@3.0.0");
    await waitRows(page, ["cache@3.0.0"]);
    assert.match(await page.locator("#feed").innerText(), /reset/);

    assert.deepEqual(errors, []);
  } finally {
    await s[Symbol.asyncDispose]();
  }
});

test("the web view signs in with the token and then follows the registry", async (t) => {
  const pw = await browserLibrary();
  if (typeof pw === "string") return skip(t, pw);
  await using s = await serveHttp({
    secret: "beep boop",
    http: { port: 0, token: "view-token" },
  });
  await using b = await browse(pw);
  const { page, errors } = b;
  const first = await page.goto(`${s.base}/`);
  assert.equal(first?.status(), 401);
  await page.getByLabel("HTTP token").fill("wrong");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("[role=alert]", {
    hasText: "not this server's HTTP token",
  })
    .waitFor();
  await page.getByLabel("HTTP token").fill("view-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#status.live").waitFor();
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === "seaport_session");
  assert.equal(session?.httpOnly, true);
  assert.equal(session?.sameSite, "Strict");
  const c = s.client({ secret: "beep boop" });
  await c.service("web@1.0.0");
  await waitRows(page, ["web@1.0.0"]);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("HTTP token").waitFor();
  // the console reports the 401 answers of the sign-in page; nothing else
  assert.deepEqual(errors.filter((e) => !/401/.test(e)), []);
});
