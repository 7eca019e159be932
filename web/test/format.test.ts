import { describe, expect, test } from "vitest";

import { bytes, duration, speed, stateName } from "../src/format.js";
import { DownloadState } from "../src/gen/wallwhale/v1/download_pb.js";

describe("formatting for people", () => {
  test("bytes in decimal units", () => {
    expect(bytes(0)).toBe("0 B");
    expect(bytes(999)).toBe("999 B");
    expect(bytes(1500)).toBe("1.50 KB");
    expect(bytes(603_000n)).toBe("603 KB");
    expect(bytes(12_300_000)).toBe("12.3 MB");
  });

  test("speed and time left, with a dash when unknown", () => {
    expect(speed(0)).toBe("–");
    expect(speed(2_000_000n)).toBe("2.00 MB/s");
    expect(duration(undefined)).toBe("–");
    expect(duration({ seconds: 75n, nanos: 0 } as never)).toBe("1 min 15 s");
    expect(duration({ seconds: 7260n, nanos: 0 } as never)).toBe("2 h 1 min");
  });

  test("state names", () => {
    expect(stateName(DownloadState.WAITING_FOR_STEAM_GUARD)).toBe("waiting for Steam Guard");
    expect(stateName(DownloadState.SUCCEEDED)).toBe("succeeded");
  });
});
