import { ErrorText } from "./components.js";
import { useApi } from "./context.js";
import { useAction } from "./hooks.js";
import { archiveLinkFor, follow, type ArchiveOf } from "./save.js";

export function SaveButton({ of, filename }: { of: ArchiveOf; filename: string }) {
  const api = useApi();
  const save = useAction();
  return (
    <>
      <button type="button" disabled={save.busy} onClick={() => void save.run(async () => follow(await archiveLinkFor(api, of), filename))}>
        Save zip
      </button>
      {save.error && <ErrorText error={save.error} />}
    </>
  );
}
