// Live progress from WatchDownload/WatchBatch. A dropped stream (network, Envoy's idle cut, a
// server that stopped) is opened again after the last event seen, so nothing is missed or repeated.
import { Code, ConnectError } from "@connectrpc/connect";

import type { Api } from "./api.js";
import type { Batch, Download, WatchDownloadResponse } from "./gen/wallwhale/v1/download_pb.js";

const RETRY_MS = [500, 1000, 2000, 5000];

function fatal(error: unknown): boolean {
  // Refusals (gone, not ours, bad id) will not change by asking again.
  return (
    error instanceof ConnectError &&
    [Code.NotFound, Code.PermissionDenied, Code.InvalidArgument, Code.Unauthenticated].includes(error.code)
  );
}

async function pause(ms: number, signal: AbortSignal): Promise<void> {
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve(undefined)), { once: true });
  });
}

export interface DownloadWatcher {
  onEvent(event: WatchDownloadResponse): void;
  onFinished(download: Download): void;
  onError(error: unknown): void;
}

/** Follows one download until its final event or until `signal` aborts. */
export async function watchDownload(
  api: Api,
  id: string,
  afterSequence: bigint,
  watcher: DownloadWatcher,
  signal: AbortSignal,
): Promise<void> {
  let last = afterSequence;
  for (let attempt = 0; !signal.aborted; attempt += 1) {
    try {
      for await (const event of api.downloads.watchDownload({ id, afterSequence: last }, { signal })) {
        attempt = 0;
        if (event.sequence <= last && event.event.case !== "heartbeat") continue;
        last = event.sequence > last ? event.sequence : last;
        if (event.event.case === "finished") {
          watcher.onFinished(event.event.value.download!);
          return;
        }
        watcher.onEvent(event);
      }
    } catch (error) {
      if (signal.aborted) return;
      if (await api.session.recover(error)) continue;
      if (fatal(error)) {
        watcher.onError(error);
        return;
      }
    }
    await pause(RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]!, signal);
  }
}

export interface BatchWatcher {
  onEvent(event: WatchDownloadResponse): void;
  onFinished(batch: Batch): void;
  onError(error: unknown): void;
}

/** Follows a batch. WatchBatch replays the batch's history on every call, so after a drop the
 * events each download already delivered (by its own sequence) are skipped. */
export async function watchBatch(api: Api, id: string, watcher: BatchWatcher, signal: AbortSignal): Promise<void> {
  const seen = new Map<string, bigint>();
  for (let attempt = 0; !signal.aborted; attempt += 1) {
    try {
      for await (const reply of api.downloads.watchBatch({ id }, { signal })) {
        attempt = 0;
        const event = reply.event;
        if (event.case === "finished") {
          watcher.onFinished(event.value);
          return;
        }
        if (event.case !== "downloadEvent") continue;
        const e = event.value;
        if (e.event.case === "heartbeat" || e.sequence <= (seen.get(e.downloadId) ?? -1n)) continue;
        seen.set(e.downloadId, e.sequence);
        watcher.onEvent(e);
      }
    } catch (error) {
      if (signal.aborted) return;
      if (await api.session.recover(error)) continue;
      if (fatal(error)) {
        watcher.onError(error);
        return;
      }
    }
    await pause(RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]!, signal);
  }
}
