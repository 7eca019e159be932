// A batch: its state and counts, one row per item with its live state and percent, Cancel, Save zip.
import { useEffect, useState } from "preact/hooks";

import { ErrorText } from "../components.js";
import { useApi } from "../context.js";
import { problem, type Problem } from "../errors.js";
import * as f from "../format.js";
import { BatchState, type Batch, type Download } from "../gen/wallwhale/v1/download_pb.js";
import { useAction } from "../hooks.js";
import { SaveButton } from "../SaveButton.js";
import { watchBatch } from "../watch.js";
import { titleOf } from "./Job.js";

export function BatchView({ id }: { id: string }) {
  const api = useApi();
  const [batch, setBatch] = useState<Batch | undefined>(undefined);
  const [rows, setRows] = useState<Map<string, Download>>(new Map());
  const [error, setError] = useState<Problem | undefined>(undefined);
  const action = useAction();

  useEffect(() => {
    const abort = new AbortController();
    const update = (d: Download): void => setRows((r) => new Map(r).set(d.id, d));
    (async () => {
      const [{ batch }, { downloads }] = await Promise.all([
        api.downloads.getBatch({ id }),
        api.downloads.listDownloads({ batchId: id, pageSize: 500 }),
      ]);
      if (abort.signal.aborted) return;
      setBatch(batch);
      setRows(new Map(downloads.map((d) => [d.id, d])));
      await watchBatch(
        api,
        id,
        {
          onEvent: (e) => {
            const ev = e.event;
            if (ev.case === "stateChanged" && ev.value.download) update(ev.value.download);
            else if (ev.case === "finished" && ev.value.download) update(ev.value.download);
            else if (ev.case === "progress")
              setRows((r) => {
                const d = r.get(e.downloadId);
                return d ? new Map(r).set(d.id, { ...d, progress: ev.value }) : r;
              });
          },
          onFinished: (b) => setBatch(b),
          onError: (e) => setError(problem(e)),
        },
        abort.signal,
      );
    })().catch((e: unknown) => setError(problem(e)));
    return () => abort.abort();
  }, [id]);

  if (!batch) return <article class="job">{error ? <ErrorText error={error} /> : <p>Loading…</p>}</article>;
  const ordered = batch.downloadIds.map((d) => rows.get(d)).filter((d): d is Download => d !== undefined);
  const headingId = `batch-${id}`;
  return (
    <article class="job batch" aria-labelledby={headingId} data-state={BatchState[batch.state]}>
      <h3 id={headingId}>
        <a href={`/batches/${id}`}>{batch.title || "Batch"}</a>
      </h3>
      <dl class="facts">
        <dt>State</dt>
        <dd aria-live="polite" data-testid="state">
          {f.batchStateName(batch.state)}
        </dd>
        <dt>Items</dt>
        <dd>
          {batch.totalCount} in all, {batch.succeededCount} succeeded, {batch.failedCount} failed, {batch.cancelledCount}{" "}
          cancelled
        </dd>
      </dl>
      <table>
        <caption class="visually-hidden">Items of {batch.title || "the batch"}</caption>
        <thead>
          <tr>
            <th scope="col">Item</th>
            <th scope="col">State</th>
            <th scope="col">Progress</th>
          </tr>
        </thead>
        <tbody>
          {ordered.map((d) => (
            <tr key={d.id}>
              <td>
                <a href={`/downloads/${d.id}`}>{titleOf(d)}</a>
              </td>
              <td>{f.stateName(d.state)}</td>
              <td>
                <progress max={100} value={d.progress?.percent ?? 0} aria-label={`Progress of ${titleOf(d)}`} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <div class="actions">
        {batch.state !== BatchState.ACTIVE && batch.succeededCount > 0 && (
          <SaveButton of={{ batchId: id }} filename={`batch-${id}.zip`} />
        )}
        {batch.state === BatchState.ACTIVE && (
          <button
            type="button"
            disabled={action.busy}
            onClick={() => void action.run(async () => setBatch((await api.downloads.cancelBatch({ id })).batch))}
          >
            Cancel
          </button>
        )}
      </div>
      <ErrorText error={action.error ?? error} />
    </article>
  );
}
