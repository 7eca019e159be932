// The TypeScript client against the real server with the test DepotDownloader (tests/support/client_server.py,
// started here with the repository's .venv, or WALLWHALE_PYTHON).

import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";

import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

import {
  BatchState,
  DownloadState,
  WallWhaleClient,
  WallWhaleError,
  ZipError,
  verifyZip,
  type BatchProgress,
  type FetchArchiveRequest,
  type FetchBatchArchiveRequest,
  type Progress,
  type WatchBatchResponse,
  type WatchDownloadRequest,
} from "../src/index.js";

interface Ready {
  address: string;
  apiKey: string;
  item: number;
  missingItem: number;
  files: Record<string, string>;
}

const ROOT = resolve(import.meta.dirname, "../../../..");
let server: ChildProcessWithoutNullStreams;
let ready: Ready;
let client: WallWhaleClient;
let out: string;

before(async () => {
  const python = process.env.WALLWHALE_PYTHON ?? join(ROOT, ".venv", "bin", "python");
  server = spawn(python, ["-m", "tests.support.client_server"], { cwd: ROOT });
  server.stderr.pipe(process.stderr);
  for await (const line of createInterface({ input: server.stdout })) {
    if (line.startsWith("READY ")) {
      ready = JSON.parse(line.slice("READY ".length)) as Ready;
      break;
    }
  }
  assert.ok(ready, "the test server did not start");
  server.stdout.resume(); // keep draining its log
  client = new WallWhaleClient({ baseUrl: `http://${ready.address}`, apiKey: ready.apiKey });
  out = await mkdtemp(join(tmpdir(), "wallwhale-ts-"));
});

after(async () => {
  server?.stdin.end();
  if (server && server.exitCode === null) await new Promise((done) => server.once("exit", done));
  if (out) await rm(out, { recursive: true, force: true });
});

async function expectError(promise: Promise<unknown>, code: Code, reason: string): Promise<WallWhaleError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof WallWhaleError, String(error));
    assert.equal(error.code, code, error.message);
    assert.equal(error.reason, reason);
    return error;
  }
  assert.fail(`expected ${reason}`);
}

test("download() creates the job, follows it and saves the verified zip", async () => {
  const updates: Progress[] = [];
  const path = await client.download(String(ready.item), join(out, "zips"), (p) => updates.push(p));
  const data = await readFile(path);
  const done = updates.at(-1)!.download;
  assert.equal(done.state, DownloadState.SUCCEEDED);
  assert.equal(createHash("sha256").update(data).digest("hex"), done.archive!.sha256);
  assert.equal(data.length, Number(done.archive!.sizeBytes));
  assert.equal(updates[0]!.download.state, DownloadState.QUEUED);
  assert.equal(updates.at(-1)!.fetchedBytes, data.length);
  assert.deepEqual(await readdir(join(out, "zips")), [done.archive!.filename]); // no partial file left
});

test("verifyZip reads every entry back, inflating deflated ones, and refuses a damaged or cut zip", async () => {
  const [done] = (await client.downloads.listDownloads({ states: [DownloadState.SUCCEEDED] })).downloads;
  const path = join(out, "checked.zip");
  await writeFile(path, await readAll((await client.fetchArchive(done!.id)).chunks));
  assert.equal(await verifyZip(path), Object.keys(ready.files).length);
  const data = await readFile(path);
  // A flipped byte halfway through: inside the 600 kB scene.pkg's data, whose CRC-32 then fails.
  const flipped = Buffer.from(data);
  flipped[data.length >> 1]! ^= 0xff;
  await writeFile(path, flipped);
  await assert.rejects(verifyZip(path), (error: Error) => error instanceof ZipError && /CRC-32/.test(error.message));
  await writeFile(path, data.subarray(0, data.length - 10));
  await assert.rejects(verifyZip(path), ZipError);
  await writeFile(path, Buffer.concat([data.subarray(0, 100), Buffer.alloc(200), data.subarray(300)]));
  await assert.rejects(verifyZip(path), ZipError);
});

test("fetchArchive sends size, sha256 and name first, and resumes from an offset", async () => {
  const [done] = (await client.downloads.listDownloads({ states: [DownloadState.SUCCEEDED] })).downloads;
  assert.ok(done);
  const whole = await readAll((await client.fetchArchive(done.id)).chunks);
  const { info, chunks } = await client.fetchArchive(done.id, 1000);
  assert.equal(info.size, whole.length);
  assert.equal(info.sha256, createHash("sha256").update(whole).digest("hex"));
  assert.ok(info.filename.startsWith(String(ready.item)));
  assert.deepEqual(await readAll(chunks), whole.subarray(1000));
});

test("watch replays after a sequence number and ends with the finished event", async () => {
  const [done] = (await client.downloads.listDownloads({ states: [DownloadState.SUCCEEDED] })).downloads;
  assert.ok(done);
  const all = await collect(client.watch(done.id));
  assert.equal(all.at(-1)!.event.case, "finished");
  const last = all.at(-2)!.sequence;
  const tail = await collect(client.watch(done.id, { afterSequence: last - 2n }));
  assert.deepEqual(
    tail.map((e) => e.sequence),
    [last - 1n, last, last],
  );
});

test("a watch stream that breaks is opened again after the last event seen", async () => {
  const breaker = breakFirstStream("WatchDownload", 2);
  const flaky = new WallWhaleClient({ baseUrl: `http://${ready.address}`, apiKey: ready.apiKey, interceptors: [breaker.interceptor] });
  const [done] = (await client.downloads.listDownloads({ states: [DownloadState.SUCCEEDED] })).downloads;
  assert.ok(done);
  const events = await collect(flaky.watch(done.id));
  const expected = await collect(client.watch(done.id));
  assert.deepEqual(
    events.map((e) => e.sequence),
    expected.map((e) => e.sequence),
  );
  assert.deepEqual(
    breaker.requests.map((r) => (r as WatchDownloadRequest).afterSequence),
    [0n, 2n],
  );
});

test("an archive stream that breaks is resumed from the bytes received, and checked", async () => {
  const breaker = breakFirstStream("FetchArchive", 1);
  const flaky = new WallWhaleClient({ baseUrl: `http://${ready.address}`, apiKey: ready.apiKey, interceptors: [breaker.interceptor] });
  const [done] = (await client.downloads.listDownloads({ states: [DownloadState.SUCCEEDED] })).downloads;
  assert.ok(done);
  const path = await flaky.saveArchive(done.id, join(out, "resumed"));
  const data = await readFile(path);
  assert.equal(createHash("sha256").update(data).digest("hex"), done.archive!.sha256);
  // One 256 KiB chunk (the server's ARCHIVE_CHUNK) arrived before the break.
  assert.deepEqual(
    breaker.requests.map((r) => (r as FetchArchiveRequest).offset),
    [0n, 262144n],
  );
});

test("errors carry the status code, the ErrorInfo reason and the field violations", async () => {
  const invalid = await expectError(client.createDownload("https://example.com/?id=1"), Code.InvalidArgument, "INVALID_WORKSHOP_ITEM");
  assert.equal(invalid.fieldViolations[0]?.field, "url_or_id");
  await expectError(client.getDownload("0193aaaa-0000-7000-8000-000000000000"), Code.NotFound, "NOT_FOUND");
  const stranger = new WallWhaleClient({ baseUrl: `http://${ready.address}`, apiKey: "ww_not_a_key" });
  await expectError(stranger.getDownload("x"), Code.Unauthenticated, "CREDENTIALS_INVALID");
  await expectError(client.download(String(ready.missingItem), out), Code.Aborted, "DOWNLOAD_FAILED");
});

test("an admin creates an API key that works at once, and revokes it", async () => {
  const created = await client.createApiKey("typescript", ["download:read"], { requestsPerMinute: 600 });
  assert.match(created.plaintextKey, /^ww_/);
  const keyed = new WallWhaleClient({ baseUrl: `http://${ready.address}`, apiKey: created.plaintextKey });
  assert.ok((await keyed.status.getStatus({})).version);
  await expectError(keyed.createDownload(String(ready.item)), Code.PermissionDenied, "SCOPE_MISSING");
  await client.revokeApiKey(created.apiKey!.id);
  await expectError(keyed.getDownload("x"), Code.Unauthenticated, "API_KEY_REVOKED");
});

test("a createApiKey whose answer is lost is retried with its requestId: one key, no second plaintext", async () => {
  const requestIds: string[] = [];
  let lost = false;
  const loseFirstAnswer: Interceptor = (next) => async (request) => {
    if (request.stream || request.method.name !== "CreateApiKey") return next(request);
    requestIds.push((request.message as unknown as { requestId: string }).requestId);
    const response = await next(request); // the server made the key...
    if (lost) return response;
    lost = true;
    throw new ConnectError("connection reset", Code.Unavailable); // ...but its answer never arrives
  };
  const flaky = new WallWhaleClient({ baseUrl: `http://${ready.address}`, apiKey: ready.apiKey, interceptors: [loseFirstAnswer] });
  const name = `lost-answer-${randomUUID()}`;
  const created = await flaky.createApiKey(name, ["download:read"]);
  assert.equal(requestIds.length, 2);
  assert.equal(requestIds[0], requestIds[1]);
  assert.equal(created.repeatedRequest, true);
  assert.equal(created.plaintextKey, "");
  const keys = (await client.admin.listApiKeys({ pageSize: 500 })).apiKeys.filter((key) => key.name === name);
  assert.deepEqual(
    keys.map((key) => key.id),
    [created.apiKey!.id],
  );
});

test("downloadBatch() follows a partly failing batch and saves the zip of what succeeded", async () => {
  const updates: BatchProgress[] = [];
  const saved = await client.downloadBatch([String(ready.item), String(ready.missingItem)], join(out, "batch"), (p) => updates.push(p), {
    requestId: "ts-batch",
  });
  const { batch } = saved;
  assert.equal(batch.state, BatchState.PARTIALLY_SUCCEEDED);
  assert.deepEqual([batch.succeededCount, batch.failedCount, batch.totalCount], [1, 1, 2]);
  assert.equal((await client.createBatch([String(ready.item), String(ready.missingItem)], { requestId: "ts-batch" })).id, batch.id); // idempotent
  assert.deepEqual((await client.listBatches(1)).map((b) => b.id), [batch.id]);
  const data = await readFile(saved.path);
  assert.equal(data.length, saved.info.size);
  assert.deepEqual(saved.info.missing, []);
  assert.equal(data.subarray(0, 4).toString("latin1"), "PK\x03\x04");
  assert.deepEqual(data, await readAll((await client.fetchBatchArchive(batch.id)).chunks));
  assert.deepEqual(await readdir(join(out, "batch")), [saved.path.split("/").at(-1)]); // no partial file left
  assert.equal(updates[0]!.batch.state, BatchState.ACTIVE);
  assert.deepEqual(
    [...updates.at(-1)!.downloads.values()].map((d) => d.state).sort(),
    [DownloadState.SUCCEEDED, DownloadState.FAILED].sort(),
  );
  assert.equal(updates.at(-1)!.fetchedBytes, data.length);
  await expectError(client.downloadBatch([String(ready.missingItem)], join(out, "none")), Code.Aborted, "BATCH_FAILED");
});

test("a batch watch that breaks replays on reconnect and skips what it already yielded", async () => {
  const batch = (await client.listBatches()).find((b) => b.state === BatchState.PARTIALLY_SUCCEEDED);
  assert.ok(batch);
  const breaker = breakFirstStream("WatchBatch", 3);
  const flaky = new WallWhaleClient({ baseUrl: `http://${ready.address}`, apiKey: ready.apiKey, interceptors: [breaker.interceptor] });
  const key = (e: WatchBatchResponse) =>
    e.event.case === "downloadEvent" ? `${e.event.value.downloadId}/${e.event.value.sequence}` : String(e.event.case);
  const events = (await collect(flaky.watchBatch(batch.id))).map(key);
  assert.deepEqual(events, (await collect(client.watchBatch(batch.id))).map(key));
  assert.equal(breaker.requests.length, 2);
  assert.equal(events.at(-1), "finished");
});

test("a batch archive stream that breaks is resumed from the bytes received", async () => {
  const batch = (await client.listBatches()).find((b) => b.state === BatchState.PARTIALLY_SUCCEEDED);
  assert.ok(batch);
  const breaker = breakFirstStream("FetchBatchArchive", 1);
  const flaky = new WallWhaleClient({ baseUrl: `http://${ready.address}`, apiKey: ready.apiKey, interceptors: [breaker.interceptor] });
  const saved = await flaky.saveBatchArchive(batch.id, join(out, "batch-resumed"));
  assert.deepEqual(await readFile(saved.path), await readAll((await client.fetchBatchArchive(batch.id)).chunks));
  // One 256 KiB chunk (the server's ARCHIVE_CHUNK) arrived before the break.
  assert.deepEqual(
    breaker.requests.map((r) => (r as FetchBatchArchiveRequest).offset),
    [0n, 262144n],
  );
  await expectError(client.saveBatchArchive("0193aaaa-0000-7000-8000-000000000000", out), Code.NotFound, "NOT_FOUND");
});

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const item of items) all.push(item);
  return all;
}

async function readAll(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  return Buffer.concat(await collect(chunks));
}

/**
 * Records the requests of `method` and breaks its first stream after `count` messages with UNAVAILABLE,
 * as a dropped connection would.
 */
function breakFirstStream(method: string, count: number): { interceptor: Interceptor; requests: unknown[] } {
  const requests: unknown[] = [];
  let broken = false;
  const interceptor: Interceptor = (next) => async (request) => {
    if (!request.stream || request.method.name !== method) return next(request);
    const sent = request.message;
    const response = await next({
      ...request,
      message: (async function* () {
        for await (const message of sent) {
          requests.push(message);
          yield message;
        }
      })(),
    });
    if (!response.stream || broken) return response;
    broken = true;
    const messages = response.message;
    return {
      ...response,
      message: (async function* () {
        let seen = 0;
        for await (const message of messages) {
          yield message;
          if (++seen === count) throw new ConnectError("connection reset", Code.Unavailable);
        }
      })(),
    };
  };
  return { interceptor, requests };
}
