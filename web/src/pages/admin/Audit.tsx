// The audit log with the server's filters.
import { useState } from "preact/hooks";

import { ErrorText, Field, Pager } from "../../components.js";
import { useApi } from "../../context.js";
import * as f from "../../format.js";
import { AuditOutcome } from "../../gen/wallwhale/v1/admin_pb.js";
import { usePages } from "../../hooks.js";

const PAGE = 50;

export function Audit() {
  const api = useApi();
  const [draft, setDraft] = useState({ actorId: "", action: "", resource: "", outcome: 0 });
  const [filters, setFilters] = useState(draft);
  const events = usePages(
    async (pageToken) => {
      const r = await api.admin.listAuditEvents({ pageSize: PAGE, pageToken, ...filters, outcome: filters.outcome as AuditOutcome });
      return { items: r.auditEvents, next: r.nextPageToken, total: r.totalSize };
    },
    [filters],
  );
  const text = (label: string, key: "actorId" | "action" | "resource") => (
    <Field label={label}>
      <input value={draft[key]} onInput={(e) => setDraft({ ...draft, [key]: e.currentTarget.value })} />
    </Field>
  );
  return (
    <section aria-labelledby="h-audit">
      <h2 id="h-audit">Audit log</h2>
      <form
        class="grid"
        onSubmit={(e) => {
          e.preventDefault();
          setFilters(draft);
        }}
      >
        {text("Actor id", "actorId")}
        {text("Action", "action")}
        {text("Resource", "resource")}
        <Field label="Outcome">
          <select value={draft.outcome} onChange={(e) => setDraft({ ...draft, outcome: Number(e.currentTarget.value) })}>
            <option value={0}>Any outcome</option>
            <option value={AuditOutcome.SUCCESS}>success</option>
            <option value={AuditOutcome.DENIED}>denied</option>
            <option value={AuditOutcome.FAILURE}>failure</option>
          </select>
        </Field>
        <button type="submit">Filter</button>
      </form>
      <ErrorText error={events.error} />
      <div class="scroll" tabIndex={0} role="region" aria-label="Table, scrolls sideways">
        <table>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Who</th>
              <th scope="col">Action</th>
              <th scope="col">Resource</th>
              <th scope="col">Outcome</th>
              <th scope="col">From</th>
            </tr>
          </thead>
          <tbody>
            {events.value?.items.map((e) => (
              <tr key={e.id}>
                <td>{f.time(e.eventTime)}</td>
                <td>{e.actor?.display || e.actor?.id}</td>
                <td>{e.action}</td>
                <td>{e.resource}</td>
                <td>
                  {(AuditOutcome[e.outcome] ?? "").toLowerCase()} ({e.statusCode})
                </td>
                <td>{e.clientAddress}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <Pager
        label="Pages of audit events"
        page={events.page}
        total={events.value?.total ?? 0}
        pageSize={PAGE}
        hasNext={!!events.value?.next}
        onNext={events.next}
        onPrevious={events.previous}
      />
    </section>
  );
}
