// Resuming a dropped WatchDownload/WatchBatch stream, against a stand-in for the two calls (the
// browser tests follow real streams through Envoy).
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, test } from "vitest";

import type { Api } from "../src/api.js";
import {
  DownloadSchema,
  DownloadState,
  WatchBatchResponseSchema,
  WatchDownloadResponseSchema,
  type WatchDownloadResponse,
} from "../src/gen/wallwhale/v1/download_pb.js";
import { watchBatch, watchDownload } from "../src/watch.js";

function log(downloadId: string, sequence: number, line: string): WatchDownloadResponse {
  return create(WatchDownloadResponseSchema, {
    downloadId,
    sequence: BigInt(sequence),
    event: { case: "logLine", value: { line } },
  });
}

function finished(downloadId: string, sequence: number): WatchDownloadResponse {
  const download = create(DownloadSchema, { id: downloadId, state: DownloadState.SUCCEEDED });
  return create(WatchDownloadResponseSchema, {
    downloadId,
    sequence: BigInt(sequence),
    event: { case: "finished", value: { download } },
  });
}

const dropped = () => new ConnectError("upstream connect error", Code.Unavailable);
const session = { recover: async () => false };

describe("a dropped progress stream", () => {
  test("WatchDownload is opened again after the last sequence seen", async () => {
    const asked: bigint[] = [];
    const history = [log("d", 1, "one"), log("d", 2, "two"), log("d", 3, "three"), finished("d", 4)];
    const api = {
      session,
      downloads: {
        async *watchDownload({ afterSequence }: { afterSequence: bigint }) {
          asked.push(afterSequence);
          const rest = history.filter((e) => e.sequence > afterSequence);
          yield rest[0]!;
          if (rest.length > 1 && asked.length < 3) throw dropped(); // one event, then the drop
          yield* rest.slice(1);
        },
      },
    } as unknown as Api;
    const lines: string[] = [];
    let done = false;
    await watchDownload(
      api,
      "d",
      0n,
      {
        onEvent: (e) => e.event.case === "logLine" && lines.push(e.event.value.line),
        onFinished: () => (done = true),
        onError: (e) => expect.fail(String(e)),
      },
      new AbortController().signal,
    );
    expect(asked).toEqual([0n, 1n, 2n]);
    expect(lines).toEqual(["one", "two", "three"]);
    expect(done).toBe(true);
  });

  test("WatchBatch replays its history on every call: events already seen are skipped", async () => {
    const events = [log("a", 1, "a1"), log("b", 1, "b1"), log("a", 2, "a2"), log("b", 2, "b2")];
    let calls = 0;
    const api = {
      session,
      downloads: {
        async *watchBatch() {
          calls += 1;
          for (const [index, e] of events.entries()) {
            if (calls === 1 && index === 2) throw dropped();
            yield create(WatchBatchResponseSchema, { event: { case: "downloadEvent", value: e } });
          }
          yield create(WatchBatchResponseSchema, { event: { case: "finished", value: { id: "batch" } } });
        },
      },
    } as unknown as Api;
    const lines: string[] = [];
    await watchBatch(
      api,
      "batch",
      {
        onEvent: (e) => e.event.case === "logLine" && lines.push(e.event.value.line),
        onFinished: () => undefined,
        onError: (e) => expect.fail(String(e)),
      },
      new AbortController().signal,
    );
    expect(calls).toBe(2);
    expect(lines).toEqual(["a1", "b1", "a2", "b2"]);
  });

  test("a refusal ends the watch with the error instead of asking again", async () => {
    let calls = 0;
    const api = {
      session,
      downloads: {
        async *watchDownload() {
          calls += 1;
          throw new ConnectError("download not found", Code.NotFound);
        },
      },
    } as unknown as Api;
    let error: unknown;
    await watchDownload(
      api,
      "gone",
      0n,
      { onEvent: () => undefined, onFinished: () => undefined, onError: (e) => (error = e) },
      new AbortController().signal,
    );
    expect(calls).toBe(1);
    expect((error as ConnectError).code).toBe(Code.NotFound);
  });
});
