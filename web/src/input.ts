// The "Workshop link or id" field: one entry per line (blank lines and surrounding spaces ignored).
// The server judges each entry (its message names the bad one); here they are only split.
export function entries(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
}

/** The index of the entry a server field path such as "urls_or_ids[2]" names, if any. */
export function entryIndex(field: string): number | undefined {
  const match = /^urls_or_ids\[(\d+)\]$/.exec(field);
  return match ? Number(match[1]) : undefined;
}
