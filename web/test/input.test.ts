import { describe, expect, test } from "vitest";

import { entries, entryIndex } from "../src/input.js";

describe("the Workshop link field", () => {
  test("splits lines, trims them and drops blank ones", () => {
    expect(entries("  123 \r\n\n https://steamcommunity.com/sharedfiles/filedetails/?id=4\n\t\n")).toEqual([
      "123",
      "https://steamcommunity.com/sharedfiles/filedetails/?id=4",
    ]);
    expect(entries("   \n")).toEqual([]);
  });

  test("finds the entry a server field path names", () => {
    expect(entryIndex("urls_or_ids[3]")).toBe(3);
    expect(entryIndex("url_or_id")).toBeUndefined();
  });
});
