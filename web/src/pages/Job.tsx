// One download as it happens: state, phase, percent, bytes, speed, ETA; the outcome; the log on
// demand; Cancel, Retry, Delete and Save zip.
import { useEffect, useState } from "preact/hooks";

import { ErrorText, Preview } from "../components.js";
import { useApi } from "../context.js";
import * as f from "../format.js";
import { DownloadState, type Download } from "../gen/wallwhale/v1/download_pb.js";
import { useAction } from "../hooks.js";
import { problem, type Problem } from "../errors.js";
import { navigate } from "../router.js";
import { SaveButton } from "../SaveButton.js";
import { watchDownload } from "../watch.js";

const LOG_LINES = 2000;

export function titleOf(d: Download): string {
  return d.item?.title || `Item ${d.workshopId}`;
}

export function JobView({ id, onDeleted }: { id: string; onDeleted?: () => void }) {
  const api = useApi();
  const [download, setDownload] = useState<Download | undefined>(undefined);
  const [log, setLog] = useState<string[]>([]);
  const [showLog, setShowLog] = useState(false);
  const [loadError, setLoadError] = useState<Problem | undefined>(undefined);
  const [generation, setGeneration] = useState(0); // a retry starts a new watch
  const action = useAction();

  useEffect(() => {
    const abort = new AbortController();
    setLog([]);
    api.downloads.getDownload({ id }).then(
      ({ download }) => {
        if (abort.signal.aborted) return;
        setDownload(download);
        void watchDownload(
          api,
          id,
          0n,
          {
            onEvent: (e) => {
              const ev = e.event;
              if (ev.case === "stateChanged") setDownload(ev.value.download);
              else if (ev.case === "progress") setDownload((d) => d && { ...d, progress: ev.value });
              else if (ev.case === "logLine") setLog((l) => [...l.slice(1 - LOG_LINES), ev.value.line]);
            },
            onFinished: (d) => setDownload(d),
            onError: (error) => setLoadError(problem(error)),
          },
          abort.signal,
        );
      },
      (error: unknown) => setLoadError(problem(error)),
    );
    return () => abort.abort();
  }, [id, generation]);

  if (!download) {
    return <article class="job">{loadError ? <ErrorText error={loadError} /> : <p>Loading…</p>}</article>;
  }
  const title = titleOf(download);
  const p = download.progress;
  const final = f.FINAL_STATES.has(download.state);
  const headingId = `job-${id}`;
  return (
    <article class="job" aria-labelledby={headingId} data-state={DownloadState[download.state]}>
      <header>
        <Preview url={download.item?.previewUrl} title={title} />
        <div>
          <h3 id={headingId}>
            <a href={`/downloads/${id}`}>{title}</a>
          </h3>
          <p class="muted">
            Workshop item {String(download.workshopId)} · app {download.appId}
            {download.fromCache ? " · from the cache" : ""}
          </p>
        </div>
      </header>
      <dl class="facts">
        <dt>State</dt>
        <dd aria-live="polite" data-testid="state">
          {f.stateName(download.state)}
        </dd>
        {p && !final && (
          <>
            <dt>Phase</dt>
            <dd>{f.phaseName(p.phase)}</dd>
          </>
        )}
        <dt>Progress</dt>
        <dd class="progress">
          <progress max={100} value={p?.percent ?? 0} aria-label={`Progress of ${title}`} />
          <span data-testid="percent">{(p?.percent ?? 0).toFixed(1)} %</span>
        </dd>
        <dt>Bytes</dt>
        <dd>
          {f.bytes(p?.bytesDownloaded ?? 0)}
          {p && p.bytesTotal > 0n ? ` of ${f.bytes(p.bytesTotal)}` : ""}
        </dd>
        {!final && (
          <>
            <dt>Speed</dt>
            <dd>{f.speed(p?.bytesPerSecond ?? 0)}</dd>
            <dt>Time left</dt>
            <dd>{f.duration(p?.eta)}</dd>
          </>
        )}
        {download.state === DownloadState.QUEUED && download.queuePosition > 0 && (
          <>
            <dt>Ahead in the queue</dt>
            <dd>{download.queuePosition}</dd>
          </>
        )}
      </dl>
      {download.state === DownloadState.WAITING_FOR_STEAM_GUARD && (
        <p class="notice">
          Steam asks for a Steam Guard code for this job's account. An admin answers it under Admin › Steam accounts.
        </p>
      )}
      {download.failure && download.state === DownloadState.FAILED && (
        <p class="failure" data-testid="failure">
          Failed: {download.failure.message}{" "}
          {download.failure.retryable ? "A retry may help." : "A retry will not help."}
        </p>
      )}
      {download.archive && download.state === DownloadState.SUCCEEDED && (
        <dl class="facts archive">
          <dt>Archive</dt>
          <dd>{download.archive.filename}</dd>
          <dt>Size</dt>
          <dd data-testid="size">{f.bytes(download.archive.sizeBytes)}</dd>
          <dt>SHA-256</dt>
          <dd>
            <code data-testid="sha256">{download.archive.sha256}</code>
          </dd>
        </dl>
      )}
      <div class="actions">
        {download.state === DownloadState.SUCCEEDED && (
          <SaveButton of={{ downloadId: id }} filename={download.archive?.filename ?? `${id}.zip`} />
        )}
        {!final && (
          <button type="button" disabled={action.busy} onClick={() => void action.run(() => api.downloads.cancelDownload({ id }))}>
            Cancel
          </button>
        )}
        {(download.state === DownloadState.FAILED || download.state === DownloadState.CANCELLED) && (
          <button
            type="button"
            disabled={action.busy}
            onClick={() =>
              void action.run(async () => {
                const reply = await api.downloads.retryDownload({ id, requestId: crypto.randomUUID() });
                setDownload(reply.download);
                setGeneration((g) => g + 1);
              })
            }
          >
            Retry
          </button>
        )}
        {final && (
          <button
            type="button"
            disabled={action.busy}
            onClick={() =>
              void action.run(async () => {
                await api.downloads.deleteDownload({ id });
                if (onDeleted) onDeleted();
                else navigate("/history");
              })
            }
          >
            Delete
          </button>
        )}
        <button type="button" aria-expanded={showLog} onClick={() => setShowLog(!showLog)}>
          {showLog ? "Hide log" : "Show log"}
        </button>
      </div>
      <ErrorText error={action.error} />
      {loadError && <ErrorText error={loadError} />}
      {showLog && (
        <pre class="log" tabIndex={0} aria-label={`Log of ${title}`}>
          {log.length ? log.join("\n") : "No log lines yet."}
        </pre>
      )}
    </article>
  );
}
