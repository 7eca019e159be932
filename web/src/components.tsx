// Small pieces used on every page.
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";

import type { Problem } from "./errors.js";

export function ErrorText({ error, id }: { error: Problem | undefined; id?: string }) {
  // Always in the document (empty when fine) so screen readers announce a new message.
  return (
    <p id={id} class="error" role="alert">
      {error?.message ?? ""}
    </p>
  );
}

export function Field(props: {
  label: string;
  children: ComponentChildren;
}) {
  return (
    <label class="field">
      <span>{props.label}</span>
      {props.children}
    </label>
  );
}

export function Pager(props: {
  label: string;
  page: number;
  total: number;
  pageSize: number;
  hasNext: boolean;
  onPrevious: () => void;
  onNext: () => void;
}) {
  const first = props.total === 0 ? 0 : props.page * props.pageSize + 1;
  const last = Math.min(props.total, (props.page + 1) * props.pageSize);
  return (
    <nav class="pager" aria-label={props.label}>
      <button type="button" onClick={props.onPrevious} disabled={props.page === 0}>
        Previous page
      </button>
      <span>
        {first}–{last} of {props.total}
      </span>
      <button type="button" onClick={props.onNext} disabled={!props.hasNext}>
        Next page
      </button>
    </nav>
  );
}

export function Preview({ url, title }: { url: string | undefined; title: string }) {
  // Steam's image host may be out of reach (an offline server, a strict network): then a blank tile.
  const [failed, setFailed] = useState(false);
  if (!url || failed) return <span class="preview none" aria-hidden="true" />;
  return (
    <img
      class="preview"
      src={url}
      alt={`Preview of ${title}`}
      loading="lazy"
      referrerpolicy="no-referrer"
      onError={() => setFailed(true)}
    />
  );
}
