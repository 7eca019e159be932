// "Save zip": the browser's own download manager fetches the archive from a link it can follow, so
// no archive ever passes through page memory. The link is a share link (CreateArchiveLink): it needs
// no credentials, which a followed link cannot send, and lives only a few minutes, long enough for
// the browser to start (and resume) the download.
import type { Api } from "./api.js";

export type ArchiveOf = { downloadId: string } | { batchId: string };

/** How long a link made for the Save button works. */
export const SAVE_LINK_SECONDS = 10 * 60;

/** A same-origin path that fetches the archive without credentials (the console is served by the
 *  same Envoy as the API). */
export async function archiveLinkFor(api: Api, of: ArchiveOf): Promise<string> {
  const reply = await api.downloads.createArchiveLink({ ...of, ttl: { seconds: BigInt(SAVE_LINK_SECONDS) } });
  return reply.urlPath;
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
