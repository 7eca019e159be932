// TLS to Envoy: the real Envoy serves TLS in front of the real server with the CA of `wallwhale certs dev`
// (tests/support/client_server.py --tls-envoy). With that CA as caCert a call goes through; without it the
// client refuses the server's certificate with a clear error, at once (no retries).

import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";

import { Code } from "@connectrpc/connect";

import { WallWhaleClient, WallWhaleError } from "../src/index.js";

const ROOT = resolve(import.meta.dirname, "../../../..");
let server: ChildProcessWithoutNullStreams;
let ready: { tlsAddress: string; caCert: string; apiKey: string } | undefined;

before(async () => {
  const python = process.env.WALLWHALE_PYTHON ?? join(ROOT, ".venv", "bin", "python");
  server = spawn(python, ["-m", "tests.support.client_server", "--tls-envoy"], { cwd: ROOT });
  server.stderr.pipe(process.stderr);
  for await (const line of createInterface({ input: server.stdout })) {
    if (line.startsWith("READY ")) {
      ready = JSON.parse(line.slice("READY ".length));
      break;
    }
  }
  assert.ok(ready, "the test server did not start");
  server.stdout.resume();
});

after(async () => {
  server?.stdin.end();
  if (server && server.exitCode === null) await new Promise((done) => server.once("exit", done));
});

test("a call through Envoy over TLS with the development CA", async () => {
  const caCert = await readFile(ready!.caCert);
  const client = new WallWhaleClient({ baseUrl: `https://${ready!.tlsAddress}`, apiKey: ready!.apiKey, caCert });
  const status = await client.status.getStatus({});
  assert.ok(status.instanceId, JSON.stringify(status.instanceId));
});

test("without the CA the server's certificate is refused with a clear error, not retried", async () => {
  const client = new WallWhaleClient({ baseUrl: `https://${ready!.tlsAddress}`, apiKey: ready!.apiKey });
  const started = Date.now();
  try {
    await client.getDownload("00000000000000000000000000");
    assert.fail("an untrusted certificate was accepted");
  } catch (error) {
    assert.ok(error instanceof WallWhaleError, String(error));
    assert.equal(error.code, Code.Unavailable);
    assert.equal(error.reason, "TLS_CERTIFICATE_UNTRUSTED");
    assert.match(error.message, /certificate is not trusted .*caCert/);
  }
  assert.ok(Date.now() - started < 5000, "the refusal was retried");
});
