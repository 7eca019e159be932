// "Workshop link or id": one line is one download, several lines (or a collection) one batch.
import { useState } from "preact/hooks";

import { ErrorText } from "../components.js";
import { useApi } from "../context.js";
import { reasonOf } from "../errors.js";
import { useAction } from "../hooks.js";
import { entries } from "../input.js";
import { BatchView } from "./BatchView.js";
import { JobView } from "./Job.js";

type Started = { kind: "download" | "batch"; id: string };

export function DownloadPage() {
  const api = useApi();
  const [text, setText] = useState("");
  const [started, setStarted] = useState<Started[]>([]);
  const submit = useAction();

  async function queue(): Promise<void> {
    const lines = entries(text);
    if (lines.length === 0) throw new Error("Enter a Workshop link or id.");
    const requestId = crypto.randomUUID();
    let job: Started;
    if (lines.length === 1) {
      try {
        const { download } = await api.downloads.createDownload({ urlOrId: lines[0]!, requestId });
        job = { kind: "download", id: download!.id };
      } catch (error) {
        // A collection link: the server says so, and its items become a batch.
        if (reasonOf(error) !== "WORKSHOP_ITEM_IS_COLLECTION") throw error;
        const { batch } = await api.downloads.createBatch({ urlsOrIds: lines, requestId });
        job = { kind: "batch", id: batch!.id };
      }
    } else {
      const { batch } = await api.downloads.createBatch({ urlsOrIds: lines, requestId });
      job = { kind: "batch", id: batch!.id };
    }
    setStarted((s) => [job, ...s]);
    setText("");
  }

  return (
    <main id="main">
      <h1>Download</h1>
      <form
        class="queue"
        onSubmit={(e) => {
          e.preventDefault();
          void submit.run(queue);
        }}
      >
        <label for="links">Workshop link or id</label>
        <p id="links-help" class="muted">
          One per line. A collection link, or several lines, become one batch.
        </p>
        <textarea
          id="links"
          rows={3}
          value={text}
          spellcheck={false}
          aria-invalid={submit.error ? "true" : undefined}
          aria-describedby="links-help links-error"
          onInput={(e) => {
            setText(e.currentTarget.value);
            submit.clear();
          }}
          onKeyDown={(e) => {
            if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) e.currentTarget.form?.requestSubmit();
          }}
        />
        <ErrorText id="links-error" error={submit.error} />
        <button type="submit" disabled={submit.busy}>
          Download
        </button>
      </form>
      <section aria-label="Started here" class="jobs">
        {started.map((s) => (s.kind === "download" ? <JobView key={s.id} id={s.id} /> : <BatchView key={s.id} id={s.id} />))}
      </section>
    </main>
  );
}
