// The stack (tests/support/web_stack.py: the real server, the test DepotDownloader, the fake Steam Web API,
// the real Envoy serving the built console) and Debian's Chromium driven by Playwright.
import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

export interface Stack {
  url: string;
  adminKey: string;
  admin: { email: string; password: string };
  user: { email: string; password: string };
  items: { quick: number; slow: number; hanging: number; missing: number; guard: number };
  collection: { id: number; items: number[]; title: string };
  guard: { username: string; password: string; code: string };
  steamDirectory: string;
}

export const ROOT = resolve(import.meta.dirname, "../..");
export const CHROMIUM = process.env.WALLWHALE_CHROMIUM ?? "/usr/bin/chromium";
export const HAVE_CHROMIUM = existsSync(CHROMIUM);

let process_: ChildProcessWithoutNullStreams | undefined;

export async function startStack(): Promise<Stack> {
  const python = process.env.WALLWHALE_PYTHON ?? join(ROOT, ".venv", "bin", "python");
  const child = spawn(python, ["-m", "tests.support.web_stack"], { cwd: ROOT });
  process_ = child;
  let log = "";
  child.stderr.on("data", (chunk: Buffer) => (log = (log + chunk.toString()).slice(-5000)));
  for await (const line of createInterface({ input: child.stdout })) {
    if (line.startsWith("READY ")) {
      child.stdout.resume(); // keep draining the server's log
      return JSON.parse(line.slice("READY ".length)) as Stack;
    }
  }
  assert.fail(`the stack did not start:\n${log}`);
}

export async function stopStack(): Promise<void> {
  const child = process_;
  if (!child) return;
  child.stdin.end();
  if (child.exitCode === null) await new Promise((done) => child.once("exit", done));
}

export function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** A fresh browser context (its own sessionStorage) on the console; page errors fail the test. */
export async function openConsole(browser: Browser, stack: Stack, options: { phone?: boolean } = {}) {
  const context: BrowserContext = await browser.newContext({
    acceptDownloads: true,
    ...(options.phone ? { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true } : {}),
  });
  // Generous: the machine running the tests is often shared (2 CPUs) and busy.
  context.setDefaultTimeout(60_000);
  const page: Page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(stack.url);
  return { context, page, errors };
}

export async function signIn(page: Page, who: { email: string; password: string }): Promise<void> {
  await page.getByLabel("E-mail", { exact: true }).fill(who.email);
  await page.getByLabel("Password", { exact: true }).fill(who.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("signed-in-as").waitFor();
}

/** A REST call through Envoy with the admin's key (test set-up, as any other client would). */
export async function rest(stack: Stack, method: string, path: string, body?: unknown): Promise<any> {
  const reply = await fetch(stack.url + path, {
    method,
    headers: { "x-api-key": stack.adminKey, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await reply.text();
  assert.ok(reply.ok, `${method} ${path}: ${reply.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

export async function eventually<T>(probe: () => Promise<T | undefined>, what: string, seconds = 60): Promise<T> {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
