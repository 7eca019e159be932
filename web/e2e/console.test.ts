// The web console in Debian's Chromium against the real stack (see support.ts). Run with
// `npm run e2e` (scripts/test.sh does); WALLWHALE_SCREENSHOTS=DIR also saves the main pages as PNGs.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import AxeBuilder from "@axe-core/playwright";
import type { Browser, Page } from "playwright-core";

import { HAVE_CHROMIUM, eventually, launch, openConsole, rest, signIn, startStack, stopStack, type Stack } from "./support.js";

const SHOTS = process.env.WALLWHALE_SCREENSHOTS;

describe("the web console", { skip: HAVE_CHROMIUM ? false : "no /usr/bin/chromium (apt-get install chromium)" }, () => {
  let stack: Stack;
  let browser: Browser;

  before(async () => {
    [stack, browser] = await Promise.all([startStack(), launch()]);
  });

  after(async () => {
    await browser?.close();
    await stopStack();
  });

  async function asAdmin(options: { phone?: boolean } = {}) {
    const opened = await openConsole(browser, stack, options);
    await signIn(opened.page, stack.admin);
    return opened;
  }

  /** axe-core finds no serious or critical violation on the page as it is now. */
  async function accessible(page: Page, name: string): Promise<void> {
    const result = await new AxeBuilder({ page }).analyze();
    const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
    assert.deepEqual(
      bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`),
      [],
      `accessibility of ${name}`,
    );
    if (SHOTS) await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
  }

  test("signs in with e-mail and password and shows who is signed in, with the role", async () => {
    const { page, errors, context } = await openConsole(browser, stack);
    await accessible(page, "sign-in");
    await signIn(page, stack.admin);
    assert.equal(await page.getByTestId("signed-in-as").textContent(), `${stack.admin.email} (admin)`);
    // A reload keeps the session (the refresh token is in this tab's sessionStorage) ...
    await page.reload();
    await page.getByTestId("signed-in-as").waitFor();
    // ... and signing out ends it.
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    await page.reload();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    assert.deepEqual(errors, []);
    await context.close();
  });

  test("a wrong password and a bad link show the server's messages", async () => {
    const { page, context } = await openConsole(browser, stack);
    await page.getByLabel("E-mail", { exact: true }).fill(stack.admin.email);
    await page.getByLabel("Password", { exact: true }).fill("not the password");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: "the e-mail or the password is wrong" }).waitFor();

    await signIn(page, stack.admin);
    const before = (await rest(stack, "GET", "/v1/downloads")).totalSize;
    const field = page.getByLabel("Workshop link or id");
    await field.fill("https://example.com/not-a-workshop-link");
    await page.getByRole("button", { name: "Download" }).click();
    const message = page.locator("#links-error");
    await message.filter({ hasText: /url_or_id/ }).waitFor();
    assert.equal(await field.getAttribute("aria-invalid"), "true");
    // The field names its error for assistive tools.
    assert.match((await field.getAttribute("aria-describedby")) ?? "", /links-error/);
    await field.fill(String(stack.items.missing));
    await page.getByRole("button", { name: "Download" }).click();
    await message.filter({ hasText: /not/i }).waitFor();
    assert.equal((await rest(stack, "GET", "/v1/downloads")).totalSize, before, "nothing was queued");
    await context.close();
  });

  test("downloads one item: progress moves before it ends, then size and sha256 of the zip", async () => {
    const { page, errors, context } = await asAdmin();
    await page.getByLabel("Workshop link or id").fill(
      `https://steamcommunity.com/sharedfiles/filedetails/?id=${stack.items.slow}`,
    );
    await page.getByRole("button", { name: "Download" }).click();
    const job = page.getByRole("article").filter({ hasText: "Slow aurora" });
    // Seen while it runs: a percent strictly between 0 and 100, and a speed.
    const seen = new Set<number>();
    await eventually(async () => {
      const state = await job.getByTestId("state").textContent();
      const percent = Number.parseFloat((await job.getByTestId("percent").textContent()) ?? "0");
      if (state === "running" && percent > 0 && percent < 100) seen.add(percent);
      return seen.size >= 2 ? true : undefined;
    }, "two progress values while running");
    if (SHOTS) await page.screenshot({ path: `${SHOTS}/download-running.png` });
    await job.getByTestId("state").filter({ hasText: "succeeded" }).waitFor({ timeout: 60_000 });
    const listed = (await rest(stack, "GET", "/v1/downloads?pageSize=1")).downloads[0];
    assert.equal(await job.getByTestId("sha256").textContent(), listed.archive.sha256);
    assert.match((await job.getByTestId("size").textContent()) ?? "", /KB/);
    await job.getByRole("button", { name: "Show log" }).click();
    assert.match((await job.getByLabel("Log of Slow aurora").textContent()) ?? "", /\S/);
    await accessible(page, "download");
    assert.deepEqual(errors, []);
    await context.close();
  });

  test("saves the zip through the browser's download manager and its sha256 matches", async () => {
    const { page, errors, context } = await asAdmin();
    await page.getByLabel("Workshop link or id").fill(String(stack.items.quick));
    await page.getByRole("button", { name: "Download" }).click();
    const job = page.getByRole("article").filter({ hasText: "Rain on glass" }).first();
    await job.getByTestId("state").filter({ hasText: "succeeded" }).waitFor({ timeout: 60_000 });
    const sha256 = await job.getByTestId("sha256").textContent();
    // The button makes a share link and the browser follows it: no credentials go with it.
    const [saved] = await Promise.all([
      page.waitForEvent("download"),
      job.getByRole("button", { name: "Save zip" }).click(),
    ]);
    assert.match(saved.url(), /\/v1\/links\/[\w-]{43,}$/);
    assert.match(saved.suggestedFilename(), /\.zip$/);
    const path = join(await mkdtemp(join(tmpdir(), "wallwhale-save-")), saved.suggestedFilename());
    await saved.saveAs(path);
    assert.equal(createHash("sha256").update(await readFile(path)).digest("hex"), sha256);
    assert.deepEqual(errors, []);
    await context.close();
  });

  test("a collection link becomes a batch that follows its items to the end", async () => {
    const { page, context } = await asAdmin();
    await page.getByLabel("Workshop link or id").fill(
      `https://steamcommunity.com/sharedfiles/filedetails/?id=${stack.collection.id}`,
    );
    await page.getByRole("button", { name: "Download" }).click();
    const batch = page.getByRole("article").filter({ hasText: stack.collection.title });
    await batch.getByTestId("state").filter({ hasText: "succeeded" }).waitFor({ timeout: 60_000 });
    assert.equal(await batch.getByRole("row").count(), 1 + stack.collection.items.length);
    assert.match((await batch.textContent()) ?? "", /3 in all, 3 succeeded/);
    await batch.getByRole("link", { name: stack.collection.title }).click();
    await page.getByRole("heading", { name: "Batch", exact: true }).waitFor();
    await accessible(page, "batch");
    await context.close();
  });

  test("cancels a running job", async () => {
    const { page, context } = await asAdmin();
    await page.getByLabel("Workshop link or id").fill(String(stack.items.hanging));
    await page.getByRole("button", { name: "Download" }).click();
    const job = page.getByRole("article").filter({ hasText: "Endless tide" });
    await job.getByTestId("state").filter({ hasText: "running" }).waitFor({ timeout: 60_000 });
    await job.getByRole("button", { name: "Cancel" }).click();
    await job.getByTestId("state").filter({ hasText: "cancelled" }).waitFor({ timeout: 60_000 });
    await job.getByRole("button", { name: "Retry" }).waitFor();
    // Delete removes it and opens the history.
    await job.getByRole("button", { name: "Delete" }).click();
    await page.getByRole("heading", { name: "History" }).waitFor();
    await context.close();
  });

  test("an expired access token is renewed without a visible error", async () => {
    const { page, context } = await openConsole(browser, stack);
    // The page's clock stops: its renewal timer never fires and it believes its token is fresh,
    // as in a tab that slept. The server's clock goes on; its tokens live 30 s.
    await page.clock.install();
    await page.reload();
    await signIn(page, stack.admin);
    await page.clock.pauseAt(Date.now() + 1000);
    const refreshes: string[] = [];
    page.on("request", (r) => r.url().endsWith("/wallwhale.v1.AuthService/Refresh") && refreshes.push(r.url()));
    await new Promise((r) => setTimeout(r, 32_000));
    await page.getByRole("link", { name: "History" }).click();
    // The page's own timers (Preact runs effects after a frame) move only when the test says so:
    // a quarter second at a time, far from the renewal timer.
    const listed = page.getByRole("link", { name: "Slow aurora" }).first();
    await eventually(async () => {
      await page.clock.runFor(250);
      return (await listed.isVisible()) || undefined;
    }, "the history, with a renewed token");
    assert.equal(refreshes.length, 1);
    assert.deepEqual(await page.getByRole("alert").filter({ hasText: /./ }).allTextContents(), []);
    await context.close();
  });

  test("a USER does not see the admin pages and cannot reach them by URL", async () => {
    const { page, context } = await openConsole(browser, stack);
    await signIn(page, stack.user);
    assert.equal(await page.getByTestId("signed-in-as").textContent(), `${stack.user.email} (user)`);
    assert.equal(await page.getByRole("link", { name: "Admin" }).count(), 0);
    await page.getByRole("link", { name: "History" }).click();
    await page.getByRole("heading", { name: "Downloads" }).waitFor();
    await page.getByText("No downloads.").waitFor(); // a USER sees only their own
    await accessible(page, "history");
    for (const path of ["/admin", "/admin/users", "/admin/api-keys"]) {
      await page.goto(stack.url + path);
      await page.getByRole("heading", { name: "Not available" }).waitFor();
      assert.equal(await page.getByRole("button", { name: "Create API key" }).count(), 0);
    }
    await context.close();
  });

  test("an admin creates an API key and sees its plaintext once", async () => {
    const { page, context } = await asAdmin();
    await page.getByRole("link", { name: "Admin" }).click();
    await page.getByRole("heading", { name: "Admin: Status" }).waitFor();
    await accessible(page, "admin-status");
    await page.getByRole("link", { name: "API keys" }).click();
    await page.getByLabel("Name", { exact: true }).fill("console test key");
    await page.getByLabel("Downloads per day").fill("5");
    await page.getByRole("button", { name: "Create API key" }).click();
    const plaintext = (await page.getByTestId("plaintext-key").textContent()) ?? "";
    assert.match(plaintext, /^ww_/);
    await page.getByRole("button", { name: "Copy" }).waitFor();
    await page.getByRole("button", { name: "Revoke console test key" }).waitFor();
    await accessible(page, "admin-api-keys");
    // The key works, and it is never shown again.
    const caller = await fetch(`${stack.url}/v1/auth/caller`, { headers: { "x-api-key": plaintext } });
    assert.equal(caller.status, 200);
    await page.getByRole("link", { name: "Users" }).click();
    await page.getByRole("link", { name: "API keys" }).click();
    await page.getByRole("button", { name: "Revoke console test key" }).waitFor();
    assert.equal(await page.getByTestId("plaintext-key").count(), 0);
    assert.ok(!((await page.content()).includes(plaintext)));
    await page.getByRole("link", { name: "Users" }).click();
    await page.getByRole("heading", { name: "Admin: Users" }).waitFor();
    await page.getByRole("rowheader", { name: stack.user.email }).waitFor();
    await accessible(page, "admin-users");
    // A new user: created, made admin, disabled, given a new password.
    const email = "newcomer@example.test";
    await page.getByLabel("E-mail", { exact: true }).fill(email);
    await page.getByLabel("Password", { exact: true }).fill("a first long password");
    await page.getByRole("button", { name: "Create user" }).click();
    const row = page.getByRole("row").filter({ has: page.getByRole("rowheader", { name: email }) });
    await row.getByLabel(`Role of ${email}`).selectOption({ label: "admin" });
    await row.getByRole("button", { name: `Disable ${email}` }).click();
    await row.getByRole("button", { name: `Enable ${email}` }).waitFor();
    await row.getByLabel(`New password for ${email}`).fill("a second long password");
    await row.getByRole("button", { name: "Reset password" }).click();
    await eventually(async () => ((await row.getByLabel(`New password for ${email}`).inputValue()) === "" ? true : undefined), "the reset");
    const users = (await rest(stack, "GET", "/v1/admin/users")).users as { email: string; role: string; disabled: boolean }[];
    assert.deepEqual(
      users.filter((u) => u.email === email).map((u) => [u.role, u.disabled]),
      [["USER_ROLE_ADMIN", true]],
    );
    await page.getByRole("link", { name: "Audit log" }).click();
    await page.getByRole("cell", { name: "api_key.create" }).first().waitFor();
    await accessible(page, "admin-audit");
    await context.close();
  });

  test("an admin answers the Steam Guard prompt of a waiting job, which then succeeds", async () => {
    const { page, context } = await asAdmin();
    await page.goto(`${stack.url}/admin/steam-accounts`);
    await page.getByLabel("Steam login name").fill(stack.guard.username);
    await page.getByLabel("Steam password (empty for QR login only)").fill(stack.guard.password);
    await page.getByRole("button", { name: "Add account" }).click();
    await page.getByRole("heading", { name: stack.guard.username }).waitFor();
    const accounts = (await rest(stack, "GET", "/v1/admin/steam-accounts")).steamAccounts as { id: string; username: string }[];
    const account = accounts.find((a) => a.username === stack.guard.username)!;
    const { download } = await rest(stack, "POST", "/v1/downloads", {
      urlOrId: String(stack.items.guard),
      steamAccountId: account.id,
    });
    const code = page.getByLabel(`Steam Guard code for ${stack.guard.username}`);
    await code.waitFor({ timeout: 60_000 });
    await accessible(page, "admin-steam-accounts");
    await code.fill(stack.guard.code);
    await page.getByRole("button", { name: "Submit code" }).click();
    await code.waitFor({ state: "hidden", timeout: 30_000 }); // the prompt is answered
    await page.goto(`${stack.url}/downloads/${download.id}`);
    await page.getByTestId("state").filter({ hasText: "succeeded" }).waitFor({ timeout: 60_000 });
    await accessible(page, "job");
    // An admin's history holds everyone's downloads.
    await page.getByRole("link", { name: "History" }).click();
    await page.getByRole("link", { name: "Guarded dunes" }).first().waitFor();
    await accessible(page, "history-admin");
    await context.close();
  });

  test("an admin logs a Steam account in by QR code: the server's code is shown until it is scanned", async () => {
    const { page, context } = await asAdmin();
    await page.getByRole("link", { name: "Admin" }).click();
    await page.getByRole("link", { name: "Steam accounts" }).click();
    await page.getByRole("button", { name: "QR login for alice_we" }).click();
    const code = page.getByRole("img", { name: "QR code to sign in alice_we" });
    await code.waitFor({ timeout: 60_000 });
    assert.match((await code.getAttribute("src")) ?? "", /^data:image\/svg\+xml/);
    await writeFile(join(stack.steamDirectory, "scan-qr"), "alice_we"); // the phone scans it
    await page.getByText("Signed in: the account remembers its login.").waitFor({ timeout: 60_000 });
    assert.equal(await code.count(), 0);
    await context.close();
  });

  test("works on a phone-sized screen, by keyboard alone", async () => {
    const { page, context } = await openConsole(browser, stack, { phone: true });
    // Tab to the fields and the button; Enter submits.
    await page.getByLabel("E-mail", { exact: true }).waitFor();
    await page.keyboard.press("Tab");
    await page.keyboard.type(stack.admin.email);
    await page.keyboard.press("Tab");
    await page.keyboard.type(stack.admin.password);
    await page.keyboard.press("Enter");
    await page.getByTestId("signed-in-as").waitFor();
    await page.getByLabel("Workshop link or id").focus();
    await page.keyboard.type(String(stack.items.quick));
    await page.keyboard.press("Tab");
    await page.keyboard.press("Enter");
    await page.getByRole("article").getByTestId("state").filter({ hasText: "succeeded" }).waitFor({ timeout: 60_000 });
    // Nothing wider than the screen.
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
    await accessible(page, "phone-download");
    await context.close();
  });
});
