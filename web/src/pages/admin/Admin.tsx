import { ApiKeys } from "./ApiKeys.js";
import { Audit } from "./Audit.js";
import { StatusPage } from "./Status.js";
import { SteamAccounts } from "./SteamAccounts.js";
import { Users } from "./Users.js";

const SECTIONS: [string, string, () => preact.JSX.Element][] = [
  ["/admin", "Status", StatusPage],
  ["/admin/users", "Users", Users],
  ["/admin/api-keys", "API keys", ApiKeys],
  ["/admin/steam-accounts", "Steam accounts", SteamAccounts],
  ["/admin/audit", "Audit log", Audit],
];

export function Admin({ path }: { path: string }) {
  const current = SECTIONS.find(([href]) => href === path);
  const Section = current?.[2];
  return (
    <main id="main">
      <h1>Admin{current ? `: ${current[1]}` : ""}</h1>
      <nav class="tabs" aria-label="Admin sections">
        {SECTIONS.map(([href, label]) => (
          <a key={href} href={href} aria-current={href === path ? "page" : undefined}>
            {label}
          </a>
        ))}
      </nav>
      {Section ? <Section /> : <p>There is no admin page here.</p>}
    </main>
  );
}
