import { useEffect, useState } from "preact/hooks";

import { useApi } from "./context.js";
import { UserRole } from "./gen/wallwhale/v1/admin_pb.js";
import { Admin } from "./pages/admin/Admin.js";
import { BatchView } from "./pages/BatchView.js";
import { DownloadPage } from "./pages/DownloadPage.js";
import { History } from "./pages/History.js";
import { JobView } from "./pages/Job.js";
import { SignIn } from "./pages/SignIn.js";
import { navigate, onLinkClick, usePath } from "./router.js";

function Page({ path }: { path: string }) {
  const api = useApi();
  let match: RegExpExecArray | null;
  if ((match = /^\/downloads\/([\w-]+)$/.exec(path))) {
    return (
      <main id="main">
        <h1>Download</h1>
        <JobView id={match[1]!} />
      </main>
    );
  }
  if ((match = /^\/batches\/([\w-]+)$/.exec(path))) {
    return (
      <main id="main">
        <h1>Batch</h1>
        <BatchView id={match[1]!} />
      </main>
    );
  }
  if (path === "/history") return <History />;
  if (path === "/admin" || path.startsWith("/admin/")) {
    // Only admins see these pages (the server refuses the calls of anyone else anyway).
    if (!api.session.isAdmin) {
      return (
        <main id="main">
          <h1>Not available</h1>
          <p>This page is for admins.</p>
        </main>
      );
    }
    return <Admin path={path} />;
  }
  if (path !== "/") {
    return (
      <main id="main">
        <h1>Not found</h1>
        <p>
          There is no page here. <a href="/">Download something</a>.
        </p>
      </main>
    );
  }
  return <DownloadPage />;
}

export function App() {
  const api = useApi();
  const session = api.session;
  const path = usePath();
  const [, setVersion] = useState(0);
  const [resuming, setResuming] = useState(() => session.canResume);
  useEffect(() => {
    const unsubscribe = session.subscribe(() => setVersion((v) => v + 1));
    void session.resume().finally(() => setResuming(false));
    return unsubscribe;
  }, []);
  useEffect(() => {
    document.title = session.signedIn ? "WallWhale" : "Sign in · WallWhale";
  }, [session.signedIn]);

  if (resuming) return <p class="loading">Loading…</p>;
  if (!session.signedIn) return <SignIn />;
  const caller = session.caller!;
  const who = caller.user?.displayName || caller.user?.email || caller.actor?.display || "someone";
  const role = caller.user ? (caller.user.role === UserRole.ADMIN ? "admin" : "user") : "";
  const link = (href: string, label: string) => (
    <a href={href} aria-current={path === href || (href !== "/" && path.startsWith(href)) ? "page" : undefined}>
      {label}
    </a>
  );
  return (
    <div onClick={onLinkClick}>
      <a class="skip" href="#main">
        Skip to the content
      </a>
      <header class="top">
        <span class="brand">WallWhale</span>
        <nav aria-label="Pages">
          {link("/", "Download")}
          {link("/history", "History")}
          {session.isAdmin && link("/admin", "Admin")}
        </nav>
        <div class="who">
          <span data-testid="signed-in-as">
            {who}
            {role && ` (${role})`}
            {caller.apiKey ? ` · key ${caller.apiKey.prefix}` : ""}
          </span>
          <button
            type="button"
            onClick={() => {
              void session.logout();
              navigate("/");
            }}
          >
            Sign out
          </button>
        </div>
      </header>
      <Page path={path} />
    </div>
  );
}
