// "Save zip": the browser's own download manager fetches the archive from a link it can follow, so
// no archive ever passes through page memory.
//
// TODO(issue 17): CreateArchiveLink returns a short-lived signed link (/v1/links/<token>) that needs
// no credentials. Until it exists there is no same-origin route a browser can follow: the archive
// routes (/v1/downloads/{id}/archive, /v1/batches/{id}/archive) need an x-api-key or authorization
// header, which a followed link cannot send. When issue 17 lands, archiveLinkFor calls
//   api.downloads.createArchiveLink({ downloadId | batchId, ... })  and returns the reply's URL;
// nothing else here changes (the e2e test "saves the zip" is skipped until then).
import type { Api } from "./api.js";

export type ArchiveOf = { downloadId: string } | { batchId: string };

export class SaveUnavailable extends Error {}

export async function archiveLinkFor(_api: Api, _of: ArchiveOf): Promise<string> {
  throw new SaveUnavailable(
    "Saving from the browser needs signed archive links, which this server does not offer yet.",
  );
}

/** Hands the link to the browser's download manager. */
export function follow(url: string, filename: string): void {
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  link.rel = "noopener";
  document.body.append(link);
  link.click();
  link.remove();
}
