// The web console's first load, measured in Debian's Chromium against the real stack
// (tests/support/web_stack.py: server, test DepotDownloader, Envoy serving web/dist):
//   - the JavaScript and CSS bytes the browser received (compressed, as Envoy sent them) on a cold
//     load, against the budget of 200 KB;
//   - the time from navigation start until the app is interactive: the sign-in form rendered with
//     its button (cold cache, then warm cache), and, signed in, a reload until the Download form is
//     rendered (that includes the Refresh and GetCaller round trips); median of --rounds.
//
//   npm --prefix web run build && node bench/web_console.mjs [--rounds 15]
import { spawn } from "node:child_process";
import { cpus, loadavg, totalmem } from "node:os";
import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "..");
const { chromium } = createRequire(join(ROOT, "web", "package.json"))("playwright-core");
const rounds = Number(process.argv[process.argv.indexOf("--rounds") + 1] || 15) || 15;

const stack = spawn(join(ROOT, ".venv", "bin", "python"), ["-m", "tests.support.web_stack"], { cwd: ROOT });
let ready;
for await (const line of createInterface({ input: stack.stdout })) {
  if (line.startsWith("READY ")) {
    ready = JSON.parse(line.slice(6));
    break;
  }
}
stack.stdout.resume();

// Marks the moment a selector first appears, from inside the page (not subject to polling delays).
const MARK = `
  window.__ready = {};
  const marks = { signin: 'form button[type="submit"]', download: 'textarea#links' };
  new MutationObserver(() => {
    for (const [name, selector] of Object.entries(marks)) {
      if (!window.__ready[name] && document.querySelector(selector)) window.__ready[name] = performance.now();
    }
  }).observe(document, { childList: true, subtree: true });
`;

const browser = await chromium.launch({
  executablePath: process.env.WALLWHALE_CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const median = (values) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
const timings = { cold: [], warm: [], signedIn: [] };
let transferred;
try {
  for (let round = 0; round < rounds; round += 1) {
    const context = await browser.newContext();
    await context.addInitScript(MARK);
    const page = await context.newPage();
    const assets = [];
    page.on("requestfinished", async (request) => {
      if (!/\.(js|css)$/.test(new URL(request.url()).pathname)) return;
      const response = await request.response();
      const sizes = await request.sizes();
      assets.push({ path: new URL(request.url()).pathname, encoding: (await response.allHeaders())["content-encoding"] ?? "identity", bytes: sizes.responseBodySize });
    });
    const wait = (name) => page.waitForFunction((n) => window.__ready[n] !== undefined, name).then(() => page.evaluate((n) => window.__ready[n], name));
    await page.goto(ready.url);
    timings.cold.push(await wait("signin"));
    if (!transferred) {
      await page.waitForLoadState("networkidle");
      transferred = [...assets];
    }
    await page.reload();
    timings.warm.push(await wait("signin"));
    await page.getByLabel("E-mail", { exact: true }).fill(ready.admin.email);
    await page.getByLabel("Password", { exact: true }).fill(ready.admin.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByLabel("Workshop link or id").waitFor();
    await page.reload();
    timings.signedIn.push(await wait("download"));
    await context.close();
  }
} finally {
  await browser.close();
  stack.stdin.end();
}

const total = transferred.reduce((sum, a) => sum + a.bytes, 0);
console.log(`web console first load — ${new Date().toISOString()}`);
console.log(`machine: ${cpus().length} CPUs (${cpus()[0]?.model}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB, load ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
console.log(`command: node bench/web_console.mjs --rounds ${rounds}`);
for (const a of transferred) console.log(`  ${a.path}  ${a.encoding}  ${(a.bytes / 1000).toFixed(1)} kB`);
console.log(`JS+CSS transferred on a cold load: ${(total / 1000).toFixed(1)} kB (budget 200 kB)`);
for (const [name, values] of Object.entries(timings)) {
  console.log(`${name.padEnd(9)} interactive after ${median(values).toFixed(0)} ms (median of ${values.length}; min ${Math.min(...values).toFixed(0)}, max ${Math.max(...values).toFixed(0)})`);
}
