// Share links from the TypeScript client, against the real server (tests/client_server.py). Fetching
// a link needs Envoy and no credentials: tests/api/test_share_links.py covers that.

import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";

import { Code } from "@connectrpc/connect";

import { DownloadState, WallWhaleClient, WallWhaleError } from "../src/index.js";

const ROOT = resolve(import.meta.dirname, "../../../..");
let server: ChildProcessWithoutNullStreams;
let client: WallWhaleClient;
let item = 0;

before(async () => {
  const python = process.env.WALLWHALE_PYTHON ?? join(ROOT, ".venv", "bin", "python");
  server = spawn(python, ["-m", "tests.support.client_server"], { cwd: ROOT });
  server.stderr.pipe(process.stderr);
  for await (const line of createInterface({ input: server.stdout })) {
    if (line.startsWith("READY ")) {
      const ready = JSON.parse(line.slice("READY ".length)) as { address: string; apiKey: string; item: number };
      client = new WallWhaleClient({ baseUrl: `http://${ready.address}`, apiKey: ready.apiKey });
      item = ready.item;
      break;
    }
  }
  assert.ok(client, "the test server did not start");
  server.stdout.resume();
});

after(async () => {
  server?.stdin.end();
  if (server && server.exitCode === null) await new Promise((done) => server.once("exit", done));
});

test("a share link is created for a finished download, listed without its token, and revoked", async () => {
  const created = await client.downloads.createDownload({ urlOrId: String(item), requestId: "ts-links-1" });
  const id = created.download!.id;
  for (let i = 0; i < 600 && (await client.getDownload(id)).state !== DownloadState.SUCCEEDED; i++) {
    await new Promise((done) => setTimeout(done, 50));
  }
  const made = await client.createArchiveLink({ downloadId: id }, { expiresSeconds: 600, singleUse: true });
  assert.match(made.urlPath, /^\/v1\/links\/[\w-]{43,}$/);
  assert.equal(made.link!.singleUse, true);
  const expires = Number(made.link!.expireTime!.seconds) - Date.now() / 1000;
  assert.ok(expires > 590 && expires <= 601, String(expires));
  const links = await client.listArchiveLinks({ downloadId: id });
  assert.deepEqual(links.map((link) => link.id), [made.link!.id]);
  assert.ok(!JSON.stringify(links, (_, v) => (typeof v === "bigint" ? String(v) : v)).includes(made.urlPath.slice(10)));
  const revoked = await client.revokeArchiveLink(made.link!.id);
  assert.equal(revoked.revoked, true);
  try {
    await client.createArchiveLink({ downloadId: id }, { expiresSeconds: 10 * 86400 });
    assert.fail("a lifetime past the maximum was accepted");
  } catch (error) {
    assert.ok(error instanceof WallWhaleError, String(error));
    assert.equal(error.code, Code.InvalidArgument);
  }
});
