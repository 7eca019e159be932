// API keys: create with scopes and limits (the key shown once, with a copy button), revoke, usage.
import { useState } from "preact/hooks";

import { ErrorText, Field, Pager } from "../../components.js";
import { useApi } from "../../context.js";
import * as f from "../../format.js";
import type { ApiKeyLimits } from "../../gen/wallwhale/v1/admin_pb.js";
import { useAction, usePages } from "../../hooks.js";

const PAGE = 50;
const SCOPES = ["download:read", "download:write", "admin:read", "admin:write"];

function optionalNumber(text: string): number | undefined {
  return text.trim() === "" ? undefined : Number(text);
}

export function ApiKeys() {
  const api = useApi();
  const keys = usePages(async (pageToken) => {
    const r = await api.admin.listApiKeys({ pageSize: PAGE, pageToken });
    return { items: r.apiKeys, next: r.nextPageToken, total: r.totalSize };
  }, []);
  const create = useAction();
  const revoke = useAction();
  const [name, setName] = useState("");
  const [scopes, setScopes] = useState<string[]>(["download:read", "download:write"]);
  const [limits, setLimits] = useState<Record<string, string>>({});
  const [created, setCreated] = useState<{ name: string; key: string } | undefined>(undefined);
  const [copied, setCopied] = useState(false);
  const limit = (label: string, field: keyof ApiKeyLimits) => (
    <Field label={label}>
      <input
        type="number"
        min={0}
        inputMode="numeric"
        value={limits[field] ?? ""}
        onInput={(e) => setLimits({ ...limits, [field]: e.currentTarget.value })}
      />
    </Field>
  );
  return (
    <>
      <section aria-labelledby="h-new-key">
        <h2 id="h-new-key">New API key</h2>
        <form
          class="grid"
          onSubmit={(e) => {
            e.preventDefault();
            setCopied(false);
            void create
              .run(async () => {
                const big = (v: string | undefined) => (v ? BigInt(v) : undefined);
                const reply = await api.admin.createApiKey({
                  requestId: crypto.randomUUID(),
                  apiKey: {
                    name,
                    scopes,
                    limits: {
                      requestsPerMinute: optionalNumber(limits.requestsPerMinute ?? ""),
                      burst: optionalNumber(limits.burst ?? ""),
                      dailyDownloadQuota: big(limits.dailyDownloadQuota),
                      monthlyDownloadQuota: big(limits.monthlyDownloadQuota),
                      maxConcurrentDownloads: optionalNumber(limits.maxConcurrentDownloads ?? ""),
                    },
                  },
                });
                setCreated({ name, key: reply.plaintextKey });
              })
              .then((ok) => {
                if (!ok) return;
                setName("");
                setLimits({});
                keys.reload();
              });
          }}
        >
          <Field label="Name">
            <input required value={name} onInput={(e) => setName(e.currentTarget.value)} />
          </Field>
          <fieldset>
            <legend>Scopes</legend>
            {SCOPES.map((scope) => (
              <label key={scope} class="check">
                <input
                  type="checkbox"
                  checked={scopes.includes(scope)}
                  onChange={(e) =>
                    setScopes(e.currentTarget.checked ? [...scopes, scope] : scopes.filter((s) => s !== scope))
                  }
                />
                {scope}
              </label>
            ))}
          </fieldset>
          {limit("Requests per minute", "requestsPerMinute")}
          {limit("Burst", "burst")}
          {limit("Downloads per day", "dailyDownloadQuota")}
          {limit("Downloads per month", "monthlyDownloadQuota")}
          {limit("Concurrent downloads", "maxConcurrentDownloads")}
          <button type="submit" disabled={create.busy}>
            Create API key
          </button>
          <ErrorText error={create.error} />
        </form>
        {created && (
          <div class="notice" role="status">
            <p>
              The key <strong>{created.name}</strong>. It is shown only now: store it.
            </p>
            <p>
              <code data-testid="plaintext-key">{created.key}</code>
            </p>
            <button
              type="button"
              onClick={() => void navigator.clipboard.writeText(created.key).then(() => setCopied(true), () => setCopied(false))}
            >
              Copy
            </button>
            <span aria-live="polite">{copied ? " Copied." : ""}</span>{" "}
            <button type="button" onClick={() => setCreated(undefined)}>
              Done
            </button>
          </div>
        )}
      </section>
      <section aria-labelledby="h-keys">
        <h2 id="h-keys">API keys</h2>
        <ErrorText error={keys.error ?? revoke.error} />
        <div class="scroll" tabIndex={0} role="region" aria-label="Table, scrolls sideways">
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Key</th>
                <th scope="col">Scopes</th>
                <th scope="col">Downloads today / this month</th>
                <th scope="col">Last used</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {keys.value?.items.map((k) => (
                <tr key={k.id}>
                  <th scope="row">{k.name}</th>
                  <td>
                    <code>{k.prefix}…</code>
                  </td>
                  <td>{k.scopes.join(", ")}</td>
                  <td>
                    {String(k.usage?.dailyDownloads ?? 0)} / {String(k.usage?.monthlyDownloads ?? 0)}
                  </td>
                  <td>{f.time(k.lastUsedTime)}</td>
                  <td>
                    <button
                      type="button"
                      disabled={revoke.busy}
                      onClick={() =>
                        void revoke.run(async () => {
                          await api.admin.revokeApiKey({ id: k.id });
                          keys.reload();
                        })
                      }
                    >
                      Revoke {k.name}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        <Pager
          label="Pages of API keys"
          page={keys.page}
          total={keys.value?.total ?? 0}
          pageSize={PAGE}
          hasNext={!!keys.value?.next}
          onNext={keys.next}
          onPrevious={keys.previous}
        />
      </section>
    </>
  );
}
