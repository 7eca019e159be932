// Steam accounts: add, disable, owned apps, status and cooldown, the Steam Guard code a waiting job
// needs, and QR login (the server's SVG of each code, until it is scanned).
import { useEffect, useRef, useState } from "preact/hooks";

import { ErrorText, Field } from "../../components.js";
import { useApi } from "../../context.js";
import { problem, type Problem } from "../../errors.js";
import * as f from "../../format.js";
import { SteamAccountStatus, type SteamAccount } from "../../gen/wallwhale/v1/admin_pb.js";
import { DownloadState, SteamGuardKind, type Download } from "../../gen/wallwhale/v1/download_pb.js";
import { useAction, useLoad } from "../../hooks.js";

function statusName(s: SteamAccountStatus): string {
  return (SteamAccountStatus[s] ?? "unknown").toLowerCase().replaceAll("_", " ").replace("steam guard", "Steam Guard");
}

function QrLogin({ account, onDone }: { account: SteamAccount; onDone: () => void }) {
  const api = useApi();
  const [svg, setSvg] = useState<string | undefined>(undefined);
  const [outcome, setOutcome] = useState<string>("Starting…");
  const [error, setError] = useState<Problem | undefined>(undefined);
  const abort = useRef<AbortController | undefined>(undefined);
  useEffect(() => {
    const controller = new AbortController();
    abort.current = controller;
    (async () => {
      for await (const reply of api.admin.startQrLogin({ id: account.id }, { signal: controller.signal })) {
        const e = reply.event;
        if (e.case === "qrCode") {
          setSvg(e.value.svg);
          setOutcome("Scan the code with the Steam mobile app.");
        } else if (e.case === "succeeded") {
          setSvg(undefined);
          setOutcome("Signed in: the account remembers its login.");
          onDone();
        } else if (e.case === "failed") {
          setSvg(undefined);
          setOutcome(`The QR login failed: ${e.value}`);
        }
      }
    })().catch((e: unknown) => {
      if (!controller.signal.aborted) setError(problem(e));
    });
    return () => controller.abort();
  }, [account.id]);
  return (
    <div class="qr">
      {svg && (
        <img
          src={`data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`}
          alt={`QR code to sign in ${account.username}`}
          width={240}
          height={240}
        />
      )}
      <p role="status">{outcome}</p>
      <ErrorText error={error} />
    </div>
  );
}

function AccountCard({
  account,
  waiting,
  onChange,
}: {
  account: SteamAccount;
  waiting: Download[];
  onChange: () => void;
}) {
  const api = useApi();
  const action = useAction();
  const [code, setCode] = useState("");
  const [apps, setApps] = useState(account.ownedAppIds.join(", "));
  const [qr, setQr] = useState(false);
  const name = account.displayName || account.username;
  const update = (fields: Partial<SteamAccount>, paths: string[]) =>
    action.run(async () => {
      await api.admin.updateSteamAccount({ steamAccount: { ...account, ...fields }, updateMask: { paths } });
      onChange();
    });
  // The challenge: on the account, or (the server fills only the job's) on the jobs that wait for it.
  const guard = account.steamGuard ?? waiting.find((d) => d.steamGuard)?.steamGuard;
  const asks = account.status === SteamAccountStatus.WAITING_FOR_STEAM_GUARD || waiting.length > 0;
  return (
    <li class="card account" aria-labelledby={`acct-${account.id}`}>
      <div>
        <h3 id={`acct-${account.id}`}>{name}</h3>
        <p class="muted">
          {account.username} · {statusName(account.status)}
          {account.statusReason ? ` (${account.statusReason})` : ""}
          {account.status === SteamAccountStatus.COOLING_DOWN ? ` · until ${f.time(account.cooldownEndTime)}` : ""}
          {account.hasRememberedLogin ? " · remembers its login" : ""} · {String(account.downloadsRun)} runs,{" "}
          {String(account.downloadsFailed)} failed
        </p>
        {account.notOwnedAppIds.length > 0 && <p class="muted">Does not own apps {account.notOwnedAppIds.join(", ")}</p>}
        {asks && (
          <form
            class="notice inline"
            onSubmit={(e) => {
              e.preventDefault();
              void action.run(async () => {
                await api.admin.submitSteamGuardCode({ id: account.id, code: code.trim() });
                setCode("");
                onChange();
              });
            }}
          >
            <p>
              {waiting.length > 0 && `Waiting: ${waiting.map((d) => d.item?.title || String(d.workshopId)).join(", ")}. `}
              {guard?.kind === SteamGuardKind.MOBILE_CONFIRMATION
                ? "Steam waits for the sign-in to be approved in the Steam mobile app."
                : guard?.kind === SteamGuardKind.EMAIL_CODE
                  ? `Steam sent a code to ${guard.emailHint}.`
                  : "Steam asks for a code from the authenticator app."}
              {guard?.previousCodeRejected ? " The previous code was wrong." : ""}
            </p>
            {guard?.kind !== SteamGuardKind.MOBILE_CONFIRMATION && (
              <>
                <Field label={`Steam Guard code for ${account.username}`}>
                  <input
                    autocomplete="one-time-code"
                    required
                    value={code}
                    onInput={(e) => setCode(e.currentTarget.value)}
                  />
                </Field>
                <button type="submit" disabled={action.busy}>
                  Submit code
                </button>
              </>
            )}
          </form>
        )}
        <form
          class="inline"
          onSubmit={(e) => {
            e.preventDefault();
            const ids = apps
              .split(/[\s,]+/)
              .filter(Boolean)
              .map(Number);
            void update({ ownedAppIds: ids }, ["owned_app_ids"]);
          }}
        >
          <Field label={`Owned app ids of ${account.username}`}>
            <input value={apps} inputMode="numeric" onInput={(e) => setApps(e.currentTarget.value)} />
          </Field>
          <button type="submit" disabled={action.busy}>
            Save apps
          </button>
        </form>
        <div class="actions">
          <button type="button" disabled={action.busy} onClick={() => void update({ disabled: !account.disabled }, ["disabled"])}>
            {account.disabled ? `Enable ${account.username}` : `Disable ${account.username}`}
          </button>
          <button type="button" aria-expanded={qr} onClick={() => setQr(!qr)}>
            {qr ? "Stop QR login" : `QR login for ${account.username}`}
          </button>
        </div>
        {qr && <QrLogin account={account} onDone={onChange} />}
        <ErrorText error={action.error} />
      </div>
    </li>
  );
}

export function SteamAccounts() {
  const api = useApi();
  const accounts = useLoad(() => api.admin.listSteamAccounts({ pageSize: 500 }), []);
  const waiting = useLoad(
    () => api.downloads.listDownloads({ states: [DownloadState.WAITING_FOR_STEAM_GUARD], pageSize: 500 }),
    [],
  );
  // Status and Steam Guard prompts change on their own: look again every few seconds.
  useEffect(() => {
    const timer = setInterval(() => {
      accounts.reload();
      waiting.reload();
    }, 3000);
    return () => clearInterval(timer);
  }, []);
  const reload = (): void => {
    accounts.reload();
    waiting.reload();
  };
  const create = useAction();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [displayName, setDisplayName] = useState("");
  return (
    <>
      <section aria-labelledby="h-new-account">
        <h2 id="h-new-account">Add a Steam account</h2>
        <form
          class="grid"
          onSubmit={(e) => {
            e.preventDefault();
            void create
              .run(() =>
                api.admin.createSteamAccount({
                  steamAccount: { username, displayName },
                  password,
                  requestId: crypto.randomUUID(),
                }),
              )
              .then((ok) => {
                if (!ok) return;
                setUsername("");
                setPassword("");
                setDisplayName("");
                accounts.reload();
              });
          }}
        >
          <Field label="Steam login name">
            <input required autocomplete="off" value={username} onInput={(e) => setUsername(e.currentTarget.value)} />
          </Field>
          <Field label="Steam password (empty for QR login only)">
            <input type="password" autocomplete="new-password" value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
          </Field>
          <Field label="Display name">
            <input value={displayName} onInput={(e) => setDisplayName(e.currentTarget.value)} />
          </Field>
          <button type="submit" disabled={create.busy}>
            Add account
          </button>
          <ErrorText error={create.error} />
        </form>
      </section>
      <section aria-labelledby="h-accounts">
        <h2 id="h-accounts">Steam accounts</h2>
        <ErrorText error={accounts.error} />
        <ul class="cards">
          {accounts.value?.steamAccounts.map((a) => (
            <AccountCard
              key={a.id}
              account={a}
              waiting={waiting.value?.downloads.filter((d) => d.steamAccountId === a.id) ?? []}
              onChange={reload}
            />
          ))}
        </ul>
        {accounts.value?.steamAccounts.length === 0 && <p>No Steam accounts yet.</p>}
      </section>
    </>
  );
}
