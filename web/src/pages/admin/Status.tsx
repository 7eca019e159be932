// GetStatus and GetStats, and what is missing before downloads can run, with the fix.
import { ErrorText } from "../../components.js";
import { useApi } from "../../context.js";
import * as f from "../../format.js";
import { type GetStatusResponse, WebApiReachability } from "../../gen/wallwhale/v1/status_pb.js";
import { useLoad } from "../../hooks.js";

export function missing(s: GetStatusResponse): string[] {
  const out: string[] = [];
  if (s.database && !s.database.ok) out.push(`The database does not answer (${s.database.error}): check WALLWHALE_DATABASE_URL.`);
  if (s.downloader && !s.downloader.available)
    out.push(
      `DepotDownloader is not available (${s.downloader.error || "not found"}): install it with \`wallwhale depotdownloader install\` or set WALLWHALE_DEPOTDOWNLOADER_PATH.`,
    );
  if (s.activeSteamAccounts === 0) out.push("No active Steam account: add one under Steam accounts (or enable one).");
  if (s.storage && !s.storage.writable) out.push(`The storage is not writable (${s.storage.error}): check WALLWHALE_STORAGE_DIR.`);
  if (s.steamWebApi && s.steamWebApi.state === WebApiReachability.UNREACHABLE)
    out.push(
      `Steam's Web API does not answer${s.steamWebApi.error ? ` (${s.steamWebApi.error})` : ""}: items are queued without their details, collections cannot be expanded.`,
    );
  return out;
}

export function StatusPage() {
  const api = useApi();
  const status = useLoad(() => api.status.getStatus({}), []);
  const stats = useLoad(() => api.admin.getStats({}), []);
  const s = status.value;
  const t = stats.value;
  const gaps = s ? missing(s) : [];
  return (
    <>
      <section aria-labelledby="h-status">
        <h2 id="h-status">Status</h2>
        <ErrorText error={status.error} />
        {s && (
          <>
            {gaps.length > 0 ? (
              <div class="notice">
                <h3>Missing for downloads</h3>
                <ul>
                  {gaps.map((g) => (
                    <li key={g}>{g}</li>
                  ))}
                </ul>
              </div>
            ) : (
              <p>Everything downloads need is in place.</p>
            )}
            <dl class="facts">
              <dt>Version</dt>
              <dd>
                {s.version} (instance {s.instanceId}, up {f.duration(s.uptime)})
              </dd>
              <dt>Database</dt>
              <dd>
                {s.database?.backend} {s.database?.ok ? "answers" : "fails"}, schema {s.database?.schemaRevision}
              </dd>
              <dt>DepotDownloader</dt>
              <dd>{s.downloader?.available ? `${s.downloader.version} ${s.downloader.runtime}` : "not available"}</dd>
              <dt>Storage</dt>
              <dd>
                {f.bytes(s.storage?.freeBytes ?? 0)} free of {f.bytes(s.storage?.totalBytes ?? 0)}; archives{" "}
                {f.bytes(s.storage?.archiveBytes ?? 0)}
              </dd>
              <dt>Queue</dt>
              <dd>
                {String(s.queue?.queued ?? 0)} queued, {String(s.queue?.running ?? 0)} running,{" "}
                {String(s.queue?.waitingForSteamGuard ?? 0)} waiting for Steam Guard
              </dd>
              <dt>Active Steam accounts</dt>
              <dd>{s.activeSteamAccounts}</dd>
            </dl>
          </>
        )}
      </section>
      <section aria-labelledby="h-stats">
        <h2 id="h-stats">Statistics</h2>
        <ErrorText error={stats.error} />
        {t && (
          <dl class="facts">
            <dt>Downloads</dt>
            <dd>
              {String(t.downloadsTotal)} in all
              {t.downloadsByState.map((c) => `, ${String(c.count)} ${f.stateName(c.state)}`).join("")}
            </dd>
            <dt>From the cache</dt>
            <dd>{String(t.cacheHits)}</dd>
            <dt>Users</dt>
            <dd>{String(t.users)}</dd>
            <dt>Active API keys</dt>
            <dd>{String(t.apiKeysActive)}</dd>
            <dt>Steam accounts</dt>
            <dd>
              {String(t.steamAccountsActive)} active of {String(t.steamAccountsTotal)}
            </dd>
            <dt>Archives</dt>
            <dd>
              {String(t.archives)}, {f.bytes(t.storageUsedBytes)}
            </dd>
            <dt>Downloaded in all</dt>
            <dd>{f.bytes(t.bytesDownloadedTotal)}</dd>
          </dl>
        )}
      </section>
    </>
  );
}
