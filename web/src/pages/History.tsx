// My downloads and batches (everyone's for admins), newest first, filtered by state, paged.
import { useState } from "preact/hooks";

import { ErrorText, Pager, Preview } from "../components.js";
import { useApi } from "../context.js";
import * as f from "../format.js";
import { DownloadState } from "../gen/wallwhale/v1/download_pb.js";
import { usePages } from "../hooks.js";
import { titleOf } from "./Job.js";

const PAGE = 20;
const STATES = [
  DownloadState.QUEUED,
  DownloadState.RUNNING,
  DownloadState.WAITING_FOR_STEAM_GUARD,
  DownloadState.ARCHIVING,
  DownloadState.SUCCEEDED,
  DownloadState.FAILED,
  DownloadState.CANCELLED,
];

export function History() {
  const api = useApi();
  const [state, setState] = useState<DownloadState | 0>(0);
  const downloads = usePages(
    async (pageToken) => {
      const r = await api.downloads.listDownloads({ pageSize: PAGE, pageToken, states: state ? [state] : [] });
      return { items: r.downloads, next: r.nextPageToken, total: r.totalSize };
    },
    [state],
  );
  const batches = usePages(async (pageToken) => {
    const r = await api.downloads.listBatches({ pageSize: PAGE, pageToken });
    return { items: r.batches, next: r.nextPageToken, total: r.totalSize };
  }, []);
  return (
    <main id="main">
      <h1>History</h1>
      <section aria-labelledby="h-downloads">
        <h2 id="h-downloads">Downloads</h2>
        <label class="field inline">
          <span>State</span>
          <select value={state} onChange={(e) => setState(Number(e.currentTarget.value) as DownloadState)}>
            <option value={0}>Any state</option>
            {STATES.map((s) => (
              <option key={s} value={s}>
                {f.stateName(s)}
              </option>
            ))}
          </select>
        </label>
        <ErrorText error={downloads.error} />
        <ul class="cards">
          {downloads.value?.items.map((d) => (
            <li key={d.id} class="card">
              <Preview url={d.item?.previewUrl} title={titleOf(d)} />
              <div>
                <a href={`/downloads/${d.id}`}>{titleOf(d)}</a>
                <p class="muted">
                  {f.stateName(d.state)} · {f.time(d.createTime)}
                  {d.archive?.sizeBytes ? ` · ${f.bytes(d.archive.sizeBytes)}` : ""}
                </p>
              </div>
            </li>
          ))}
        </ul>
        {downloads.value && downloads.value.total === 0 && <p>No downloads.</p>}
        <Pager
          label="Pages of downloads"
          page={downloads.page}
          total={downloads.value?.total ?? 0}
          pageSize={PAGE}
          hasNext={!!downloads.value?.next}
          onNext={downloads.next}
          onPrevious={downloads.previous}
        />
      </section>
      <section aria-labelledby="h-batches">
        <h2 id="h-batches">Batches</h2>
        <ErrorText error={batches.error} />
        <ul class="cards">
          {batches.value?.items.map((b) => (
            <li key={b.id} class="card">
              <div>
                <a href={`/batches/${b.id}`}>{b.title || "Batch"}</a>
                <p class="muted">
                  {f.batchStateName(b.state)} · {b.succeededCount} of {b.totalCount} succeeded · {f.time(b.createTime)}
                </p>
              </div>
            </li>
          ))}
        </ul>
        {batches.value && batches.value.total === 0 && <p>No batches.</p>}
        <Pager
          label="Pages of batches"
          page={batches.page}
          total={batches.value?.total ?? 0}
          pageSize={PAGE}
          hasNext={!!batches.value?.next}
          onNext={batches.next}
          onPrevious={batches.previous}
        />
      </section>
    </main>
  );
}
