/**
 * Typed WallWhale client for Node: the generated services (src/gen, from proto/ with buf) over the gRPC
 * transport of @connectrpc/connect-node, and a thin layer for what every caller needs: credentials,
 * errors with the server's ErrorInfo reason and RetryInfo delay, a watch stream that resumes after the
 * last sequence number, archive fetching with its size and sha256, and download() doing it all; the
 * same for batches (watchBatch, saveBatchArchive resumed while x-archive-version holds, downloadBatch).
 *
 *   const client = new WallWhaleClient({ baseUrl: "http://127.0.0.1:50051", apiKey: "ww_..." });
 *   const path = await client.download("https://steamcommunity.com/sharedfiles/filedetails/?id=...", "out");
 */

import { createHash, randomUUID } from "node:crypto";
import { mkdir, open, rename, rm, type FileHandle } from "node:fs/promises";
import { basename, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { Code, ConnectError, createClient, type CallOptions, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { BadRequestSchema, ErrorInfoSchema, QuotaFailureSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { AdminService, type ApiKey, type ApiKeyLimits, type CreateApiKeyResponse } from "./gen/wallwhale/v1/admin_pb.js";
import { AuthService } from "./gen/wallwhale/v1/auth_pb.js";
import {
  BatchState,
  DownloadService,
  DownloadState,
  type ArchiveLink,
  type Batch,
  type CreateArchiveLinkResponse,
  type Download,
  type WatchBatchResponse,
  type WatchDownloadResponse,
} from "./gen/wallwhale/v1/download_pb.js";
import { StatusService } from "./gen/wallwhale/v1/status_pb.js";
import { WatchService } from "./gen/wallwhale/v1/watch_pb.js";
import { verifyZip, ZipError } from "./zip.js";

export * from "./gen/wallwhale/v1/admin_pb.js";
export * from "./gen/wallwhale/v1/auth_pb.js";
export * from "./gen/wallwhale/v1/download_pb.js";
export * from "./gen/wallwhale/v1/errors_pb.js";
export * from "./gen/wallwhale/v1/status_pb.js";
export * from "./gen/wallwhale/v1/watch_pb.js";
export { Code } from "@connectrpc/connect";
export { verifyZip, ZipError } from "./zip.js";

export interface ClientOptions {
  /** "http://host:port" for plain HTTP/2, "https://host:port" for TLS. */
  baseUrl: string;
  /** An API key (sent as x-api-key). */
  apiKey?: string;
  /** A person's access token from AuthService.Login (sent as a Bearer token). */
  accessToken?: string;
  /** Deadline of each unary call, in milliseconds (streams run as long as they need). Default 30 s. */
  timeoutMs?: number;
  /** Tries in all for a call answered UNAVAILABLE or RESOURCE_EXHAUSTED with a short RetryInfo. Default 5. */
  attempts?: number;
  /** Extra interceptors, e.g. for logging or tests. */
  interceptors?: Interceptor[];
  /**
   * PEM of the CA(s) to trust for an https baseUrl instead of Node's default ones, e.g.
   * `readFileSync("certs/ca.pem")` for the CA of `wallwhale certs dev` or a private CA.
   */
  caCert?: string | Buffer;
}

/** Node's codes for a server certificate that does not verify (unknown CA, wrong name, expired). */
const UNTRUSTED_CERTIFICATE = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_HAS_EXPIRED",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** A failed call, with what the server said in google.rpc.Status details. */
export class WallWhaleError extends Error {
  constructor(
    message: string,
    /** The gRPC status, e.g. Code.NotFound; Code.DataLoss for an archive that fails its checks. */
    readonly code: Code,
    /** ErrorInfo.reason (domain "wallwhale"), e.g. "INVALID_WORKSHOP_ITEM"; switch on this. */
    readonly reason: string = "",
    /** RetryInfo: how long to wait before trying again, in milliseconds. */
    readonly retryAfterMs?: number,
    /** BadRequest: which fields were wrong. */
    readonly fieldViolations: { field: string; description: string }[] = [],
    /** QuotaFailure: which limit was hit. */
    readonly quotaViolations: { subject: string; description: string }[] = [],
  ) {
    super(message);
    this.name = "WallWhaleError";
  }

  static from(error: unknown): WallWhaleError {
    if (error instanceof WallWhaleError) return error;
    const connect = ConnectError.from(error);
    const tlsCode = (connect.cause as { code?: unknown } | undefined)?.code;
    if (typeof tlsCode === "string" && UNTRUSTED_CERTIFICATE.has(tlsCode)) {
      return new WallWhaleError(
        `the server's TLS certificate is not trusted (${tlsCode}): give the CA certificate that signed it as ` +
          "the caCert option, and an address its certificate names",
        Code.Unavailable,
        "TLS_CERTIFICATE_UNTRUSTED",
      );
    }
    const [info] = connect.findDetails(ErrorInfoSchema);
    const [retry] = connect.findDetails(RetryInfoSchema);
    const delay = retry?.retryDelay;
    return new WallWhaleError(
      connect.rawMessage,
      connect.code,
      info?.domain === "wallwhale" ? info.reason : "",
      delay ? Number(delay.seconds) * 1000 + delay.nanos / 1e6 : undefined,
      connect.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations),
      connect.findDetails(QuotaFailureSchema).flatMap((q) => q.violations),
    );
  }
}

export interface ArchiveInfo {
  size: number;
  sha256: string;
  filename: string;
}

export interface Progress {
  download: Download;
  /** Archive bytes received, and the archive's size (0 until the fetch starts). */
  fetchedBytes: number;
  archiveBytes: number;
}

/** The initial metadata of FetchBatchArchive: no sha256 (each zip entry carries its CRC-32). */
export interface BatchArchiveInfo {
  size: number;
  /** Names the set of item archives: a resumed fetch is only valid while it is unchanged. */
  version: string;
  filename: string;
  /** Workshop ids of succeeded items whose archives were removed, left out of the zip. */
  missing: string[];
}

/** What saveBatchArchive() saved, and the batch as it is now (its counts tell which items failed). */
export interface BatchArchive {
  path: string;
  info: BatchArchiveInfo;
  batch: Batch;
}

export interface BatchProgress {
  /** The batch as created, then final once its watch ends. */
  batch: Batch;
  /** Each download of the batch as last known, by id (filled in by their events). */
  downloads: Map<string, Download>;
  fetchedBytes: number;
  archiveBytes: number;
}

const MAX_RETRY_AFTER_MS = 60_000;

export class WallWhaleClient {
  readonly downloads: Client<typeof DownloadService>;
  readonly admin: Client<typeof AdminService>;
  readonly auth: Client<typeof AuthService>;
  readonly status: Client<typeof StatusService>;
  readonly watches: Client<typeof WatchService>;
  private readonly attempts: number;
  private readonly timeoutMs: number;

  constructor(options: ClientOptions) {
    const credentials: Interceptor = (next) => async (request) => {
      if (options.apiKey) request.header.set("x-api-key", options.apiKey);
      else if (options.accessToken) request.header.set("authorization", `Bearer ${options.accessToken}`);
      return next(request);
    };
    const transport = createGrpcTransport({
      baseUrl: options.baseUrl,
      interceptors: [credentials, ...(options.interceptors ?? [])],
      nodeOptions: options.caCert === undefined ? undefined : { ca: options.caCert },
    });
    this.downloads = createClient(DownloadService, transport);
    this.admin = createClient(AdminService, transport);
    this.auth = createClient(AuthService, transport);
    this.status = createClient(StatusService, transport);
    this.watches = createClient(WatchService, transport);
    this.attempts = options.attempts ?? 5;
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  /** One unary call with a deadline, typed errors and retries (see retryDelay). */
  private async call<T>(invoke: (options: CallOptions) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await invoke({ timeoutMs: this.timeoutMs });
      } catch (raw) {
        const error = WallWhaleError.from(raw);
        const delay = retryDelay(error, attempt, this.attempts, false);
        if (delay === undefined) throw error;
        await sleep(delay);
      }
    }
  }

  async createDownload(
    urlOrId: string,
    options: { requestId?: string; appId?: number; skipCache?: boolean } = {},
  ): Promise<Download> {
    const request = { urlOrId, requestId: options.requestId ?? randomUUID(), appId: options.appId, skipCache: options.skipCache };
    const response = await this.call((o) => this.downloads.createDownload(request, o));
    return response.download!;
  }

  async getDownload(id: string): Promise<Download> {
    return (await this.call((o) => this.downloads.getDownload({ id }, o))).download!;
  }

  /**
   * A new API key; `plaintextKey` is the key itself, shown only this once. Retries send the same
   * requestId: one that meets the key its lost first answer made gets that key with
   * `repeatedRequest` set and no `plaintextKey` (never stored): revoke it and create another.
   */
  async createApiKey(
    name: string,
    scopes: string[],
    limits?: Partial<ApiKeyLimits>,
    options: { requestId?: string } = {},
  ): Promise<CreateApiKeyResponse> {
    const request = { apiKey: { name, scopes, limits }, requestId: options.requestId ?? randomUUID() };
    return this.call((o) => this.admin.createApiKey(request, o));
  }

  async revokeApiKey(id: string): Promise<ApiKey> {
    return (await this.call((o) => this.admin.revokeApiKey({ id }, o))).apiKey!;
  }

  /**
   * The download's events after `afterSequence`, ending with its `finished` event. A broken stream is
   * opened again after the last sequence number seen: no state change, log line or final event is lost
   * or repeated (a live stream may pass over progress that a newer one replaced).
   */
  async *watch(id: string, options: { afterSequence?: bigint; excludeLogs?: boolean } = {}): AsyncGenerator<WatchDownloadResponse> {
    let after = options.afterSequence ?? 0n;
    let failures = 0;
    for (;;) {
      let error: WallWhaleError;
      try {
        for await (const event of this.downloads.watchDownload({ id, afterSequence: after, excludeLogs: options.excludeLogs })) {
          failures = 0;
          if (event.sequence > after) after = event.sequence;
          yield event;
          if (event.event.case === "finished") return;
        }
        error = new WallWhaleError(`the watch stream of ${id} ended early`, Code.Unavailable);
      } catch (raw) {
        error = WallWhaleError.from(raw);
      }
      const delay = retryDelay(error, ++failures, this.attempts, true);
      if (delay === undefined) throw error;
      await sleep(delay);
    }
  }

  /**
   * The archive's bytes from `offset`, with its size, sha256 and name (from the initial metadata).
   * Not resumed here: saveArchive() resumes by calling this again with the bytes it has.
   */
  async fetchArchive(id: string, offset = 0): Promise<{ info: ArchiveInfo; chunks: AsyncIterable<Uint8Array> }> {
    let info: ArchiveInfo | undefined;
    const stream = this.downloads.fetchArchive(
      { id, offset: BigInt(offset) },
      {
        onHeader: (headers) => {
          info = {
            size: Number(headers.get("x-archive-size") ?? -1),
            sha256: headers.get("x-archive-sha256") ?? "",
            filename: headers.get("x-archive-filename") ?? "",
          };
        },
      },
    )[Symbol.asyncIterator]();
    // The headers arrive with (or before) the first message; errors before the first byte throw here.
    let first: IteratorResult<{ data: Uint8Array }>;
    try {
      first = await stream.next();
    } catch (raw) {
      throw WallWhaleError.from(raw);
    }
    if (info === undefined) throw new WallWhaleError("FetchArchive sent no x-archive-size", Code.DataLoss);
    async function* chunks(): AsyncGenerator<Uint8Array> {
      try {
        for (let item = first; !item.done; item = await stream.next()) yield item.value.data;
      } catch (raw) {
        throw WallWhaleError.from(raw);
      }
    }
    return { info, chunks: chunks() };
  }

  /**
   * Saves the archive into `destDir` under the server's name: resumed from the bytes received when
   * the stream breaks, checked against the announced size and sha256, then renamed into place.
   */
  async saveArchive(id: string, destDir: string, onBytes?: (received: number, size: number) => void): Promise<string> {
    await mkdir(destDir, { recursive: true });
    const partial = join(destDir, `.wallwhale-${randomUUID()}.part`);
    const file = await open(partial, "w");
    const hash = createHash("sha256");
    let received = 0;
    let expected: ArchiveInfo | undefined;
    try {
      let failures = 0;
      while (expected === undefined || received < expected.size) {
        try {
          const { info, chunks } = await this.fetchArchive(id, received);
          if (expected && (info.size !== expected.size || info.sha256 !== expected.sha256)) {
            throw new WallWhaleError(`the archive of ${id} changed while it was being fetched`, Code.DataLoss);
          }
          expected = info;
          for await (const data of chunks) {
            await file.write(data);
            hash.update(data);
            received += data.length;
            failures = 0;
            onBytes?.(received, info.size);
          }
          if (received < info.size) throw new WallWhaleError(`the archive stream of ${id} ended early`, Code.Unavailable);
        } catch (raw) {
          const error = WallWhaleError.from(raw);
          const delay = retryDelay(error, ++failures, this.attempts, true);
          if (delay === undefined) throw error;
          await sleep(delay);
        }
      }
      const sha256 = hash.digest("hex");
      if (received !== expected.size || sha256 !== expected.sha256) {
        throw new WallWhaleError(
          `archive of ${id}: ${received} bytes with sha256 ${sha256}, the server said ${expected.size} and ${expected.sha256}`,
          Code.DataLoss,
        );
      }
      await file.sync();
      await file.close();
      const target = join(destDir, safeName(expected.filename, id));
      await rename(partial, target);
      return target;
    } finally {
      await file.close().catch(() => undefined);
      await rm(partial, { force: true });
    }
  }

  /** Creates the job (idempotent with its request id), follows it, saves and checks its zip. */
  async download(urlOrId: string, destDir: string, onProgress?: (progress: Progress) => void): Promise<string> {
    let download = await this.createDownload(urlOrId);
    onProgress?.({ download, fetchedBytes: 0, archiveBytes: 0 });
    for await (const event of this.watch(download.id, { excludeLogs: true })) {
      if (event.event.case === "stateChanged" || event.event.case === "finished") download = event.event.value.download!;
      else if (event.event.case === "progress") download = { ...download, progress: event.event.value };
      onProgress?.({ download, fetchedBytes: 0, archiveBytes: 0 });
    }
    if (download.state !== DownloadState.SUCCEEDED) {
      const failure = download.failure;
      throw new WallWhaleError(
        `download ${download.id} is ${DownloadState[download.state]}${failure?.message ? `: ${failure.message}` : ""}`,
        Code.Aborted,
        download.state === DownloadState.CANCELLED ? "CANCELLED" : "DOWNLOAD_FAILED",
      );
    }
    const done = download;
    return this.saveArchive(done.id, destDir, (fetchedBytes, archiveBytes) =>
      onProgress?.({ download: done, fetchedBytes, archiveBytes }),
    );
  }

  /** Queues every item (a collection expands into its items); idempotent with its request id. */
  async createBatch(urlsOrIds: string[], options: BatchOptions = {}): Promise<Batch> {
    const request = { urlsOrIds, requestId: options.requestId ?? randomUUID(), appId: options.appId, skipCache: options.skipCache };
    return (await this.call((o) => this.downloads.createBatch(request, o))).batch!;
  }

  async getBatch(id: string): Promise<Batch> {
    return (await this.call((o) => this.downloads.getBatch({ id }, o))).batch!;
  }

  /** Up to `limit` batches, newest first (the caller's own; every one for admins). */
  async listBatches(limit = 50): Promise<Batch[]> {
    const found: Batch[] = [];
    let pageToken = "";
    while (found.length < limit) {
      const request = { pageSize: Math.min(500, limit - found.length), pageToken };
      const page = await this.call((o) => this.downloads.listBatches(request, o));
      found.push(...page.batches);
      pageToken = page.nextPageToken;
      if (!pageToken) break;
    }
    return found.slice(0, limit);
  }

  async cancelBatch(id: string): Promise<Batch> {
    return (await this.call((o) => this.downloads.cancelBatch({ id }, o))).batch!;
  }

  /**
   * A share link to a download's (or a batch's) archive: `urlPath` appended to the server's public
   * base URL fetches the zip with no credentials until it expires (`expiresSeconds`, default and at
   * most the server's maximum), is revoked or, single use, has served one request. The token is
   * shown only in this answer.
   */
  async createArchiveLink(
    target: { downloadId: string } | { batchId: string },
    options: { expiresSeconds?: number; singleUse?: boolean } = {},
  ): Promise<CreateArchiveLinkResponse> {
    const ttl = options.expiresSeconds === undefined ? undefined : { seconds: BigInt(Math.ceil(options.expiresSeconds)) };
    return this.call((o) => this.downloads.createArchiveLink({ ...target, ttl, singleUse: options.singleUse ?? false }, o));
  }

  /** The share links of one download or batch, newest first (ended ones too). */
  async listArchiveLinks(target: { downloadId: string } | { batchId: string }): Promise<ArchiveLink[]> {
    return (await this.call((o) => this.downloads.listArchiveLinks(target, o))).links;
  }

  async revokeArchiveLink(id: string): Promise<ArchiveLink> {
    return (await this.call((o) => this.downloads.revokeArchiveLink({ id }, o))).link!;
  }

  /**
   * The events of every download of the batch, ending with `finished`. WatchBatch has no
   * afterSequence: a broken stream is opened again and the server replays the batch's history; events
   * already yielded are skipped by download id and sequence, so none is lost or repeated.
   */
  async *watchBatch(id: string, options: { excludeLogs?: boolean } = {}): AsyncGenerator<WatchBatchResponse> {
    const seen = new Map<string, bigint>();
    let failures = 0;
    for (;;) {
      let error: WallWhaleError;
      try {
        for await (const event of this.downloads.watchBatch({ id, excludeLogs: options.excludeLogs })) {
          failures = 0;
          if (event.event.case === "downloadEvent") {
            const inner = event.event.value;
            const last = seen.get(inner.downloadId) ?? 0n;
            if (inner.sequence > 0n && inner.sequence <= last) continue; // replayed after a reconnect
            if (inner.sequence > last) seen.set(inner.downloadId, inner.sequence);
          }
          yield event;
          if (event.event.case === "finished") return;
        }
        error = new WallWhaleError(`the watch stream of batch ${id} ended early`, Code.Unavailable);
      } catch (raw) {
        error = WallWhaleError.from(raw);
      }
      const delay = retryDelay(error, ++failures, this.attempts, true);
      if (delay === undefined) throw error;
      await sleep(delay);
    }
  }

  /** The batch archive's bytes from `offset`, with its size, version, name and missing items. */
  async fetchBatchArchive(id: string, offset = 0): Promise<{ info: BatchArchiveInfo; chunks: AsyncIterable<Uint8Array> }> {
    let info: BatchArchiveInfo | undefined;
    const stream = this.downloads.fetchBatchArchive(
      { id, offset: BigInt(offset) },
      {
        onHeader: (headers) => {
          if (!headers.has("x-archive-size")) return;
          info = {
            size: Number(headers.get("x-archive-size")),
            version: headers.get("x-archive-version") ?? "",
            filename: headers.get("x-archive-filename") ?? "",
            missing: (headers.get("x-archive-missing") ?? "").split(",").filter((item) => item.trim()),
          };
        },
      },
    )[Symbol.asyncIterator]();
    // The headers arrive with (or before) the first message; errors before the first byte throw here.
    let first: IteratorResult<{ data: Uint8Array }>;
    try {
      first = await stream.next();
    } catch (raw) {
      throw WallWhaleError.from(raw);
    }
    if (info === undefined) throw new WallWhaleError("FetchBatchArchive sent no x-archive-size", Code.DataLoss);
    async function* chunks(): AsyncGenerator<Uint8Array> {
      try {
        for (let item = first; !item.done; item = await stream.next()) yield item.value.data;
      } catch (raw) {
        throw WallWhaleError.from(raw);
      }
    }
    return { info, chunks: chunks() };
  }

  /**
   * Saves the batch's zip into `destDir` under the server's name. A broken stream is resumed from the
   * bytes received while x-archive-version is the same, and started again from byte 0 when it changed;
   * the finished file must have the announced size, and every entry its recorded CRC-32 and size (the
   * zip is read back: there is no sha256 of a batch archive).
   */
  async saveBatchArchive(id: string, destDir: string, onBytes?: (received: number, size: number) => void): Promise<BatchArchive> {
    await mkdir(destDir, { recursive: true });
    const partial = join(destDir, `.wallwhale-${randomUUID()}.part`);
    let file: FileHandle = await open(partial, "w");
    let received = 0;
    let expected: BatchArchiveInfo | undefined;
    let restarts = 0;
    try {
      let failures = 0;
      while (expected === undefined || received < expected.size) {
        try {
          const asked = received;
          const { info, chunks } = await this.fetchBatchArchive(id, asked);
          if (expected && info.version !== expected.version) {
            // Other item archives, other bytes: what was received is of no use.
            if (++restarts > this.attempts) throw new WallWhaleError(`the archive of batch ${id} kept changing`, Code.DataLoss);
            await file.close();
            file = await open(partial, "w");
            received = 0;
            expected = info;
            if (asked > 0) continue;
          } else if (expected && info.size !== expected.size) {
            throw new WallWhaleError(`the archive of batch ${id} changed size but not version`, Code.DataLoss);
          }
          expected = info;
          for await (const data of chunks) {
            await file.write(data);
            received += data.length;
            failures = 0;
            onBytes?.(received, info.size);
          }
          if (received < info.size) throw new WallWhaleError(`the archive stream of batch ${id} ended early`, Code.Unavailable);
        } catch (raw) {
          const error = WallWhaleError.from(raw);
          const delay = retryDelay(error, ++failures, this.attempts, true);
          if (delay === undefined) throw error;
          await sleep(delay);
        }
      }
      if (received !== expected.size) {
        throw new WallWhaleError(`archive of batch ${id}: ${received} bytes, the server said ${expected.size}`, Code.DataLoss);
      }
      await file.sync();
      await file.close();
      try {
        await verifyZip(partial);
      } catch (error) {
        if (!(error instanceof ZipError)) throw error;
        throw new WallWhaleError(`archive of batch ${id} is damaged: ${error.message}`, Code.DataLoss);
      }
      const batch = await this.getBatch(id);
      const target = join(destDir, safeName(expected.filename, id));
      await rename(partial, target);
      return { path: target, info: expected, batch };
    } finally {
      await file.close().catch(() => undefined);
      await rm(partial, { force: true });
    }
  }

  /**
   * Creates the batch (idempotent with its request id), follows it until every download is final and
   * saves its zip (a folder per item). Throws (reason "BATCH_FAILED") when no item succeeded; a partly
   * succeeded batch is returned, its counts in `batch`.
   */
  async downloadBatch(
    urlsOrIds: string[],
    destDir: string,
    onProgress?: (progress: BatchProgress) => void,
    options: BatchOptions = {},
  ): Promise<BatchArchive> {
    let batch = await this.createBatch(urlsOrIds, options);
    const downloads = new Map<string, Download>();
    const report = (fetchedBytes = 0, archiveBytes = 0) =>
      onProgress?.({ batch, downloads: new Map(downloads), fetchedBytes, archiveBytes });
    report();
    for await (const event of this.watchBatch(batch.id, { excludeLogs: true })) {
      if (event.event.case === "finished") batch = event.event.value;
      else if (event.event.case === "downloadEvent") {
        const inner = event.event.value;
        const before = downloads.get(inner.downloadId);
        if (inner.event.case === "stateChanged" || inner.event.case === "finished") downloads.set(inner.downloadId, inner.event.value.download!);
        else if (inner.event.case === "progress" && before) downloads.set(inner.downloadId, { ...before, progress: inner.event.value });
        else continue;
      } else continue;
      report();
    }
    if (batch.succeededCount === 0) {
      throw new WallWhaleError(
        `batch ${batch.id} is ${BatchState[batch.state]}: ${batch.failedCount} of ${batch.totalCount} items failed, ${batch.cancelledCount} cancelled`,
        Code.Aborted,
        "BATCH_FAILED",
      );
    }
    return this.saveBatchArchive(batch.id, destDir, (fetched, size) => report(fetched, size));
  }
}

export interface BatchOptions {
  requestId?: string;
  appId?: number;
  skipCache?: boolean;
}


/**
 * Milliseconds to wait after failed try number `attempt`, or undefined to give up: UNAVAILABLE with
 * exponential back-off, RESOURCE_EXHAUSTED after its RetryInfo delay (when short). In streams a cut
 * connection (CANCELLED/INTERNAL without a WallWhale reason) counts as UNAVAILABLE.
 */
export function retryDelay(error: WallWhaleError, attempt: number, attempts: number, stream: boolean): number | undefined {
  if (attempt >= attempts || error.reason === "TLS_CERTIFICATE_UNTRUSTED") return undefined;
  if (error.code === Code.ResourceExhausted) {
    return error.retryAfterMs !== undefined && error.retryAfterMs <= MAX_RETRY_AFTER_MS ? error.retryAfterMs : undefined;
  }
  const broken = stream && !error.reason && (error.code === Code.Canceled || error.code === Code.Internal);
  if (error.code !== Code.Unavailable && !broken) return undefined;
  const backoff = Math.min(8000, 250 * 2 ** (attempt - 1));
  return backoff * (0.8 + 0.4 * Math.random());
}

function safeName(suggested: string, id: string): string {
  const name = basename(suggested.replaceAll("\\", "/"));
  return name && name !== "." && name !== ".." ? name : `${id}.zip`;
}
