// The session's token handling, against a stand-in for the AuthService's four calls (the browser
// tests run the real one).
import { Code, ConnectError } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";

import { Session } from "../src/auth.js";
import { ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";

class MemoryStorage {
  data = new Map<string, string>();
  getItem = (k: string) => this.data.get(k) ?? null;
  setItem = (k: string, v: string) => void this.data.set(k, v);
  removeItem = (k: string) => void this.data.delete(k);
}

function tokens(n: number, lifeSeconds = 900) {
  return {
    accessToken: `access-${n}`,
    refreshToken: `refresh-${n}`,
    accessTokenExpireTime: { seconds: BigInt(Math.floor(Date.now() / 1000) + lifeSeconds), nanos: 0 },
  };
}

function expired(): ConnectError {
  return new ConnectError("the access token has expired; refresh it", Code.Unauthenticated, undefined, [
    { desc: ErrorInfoSchema, value: create(ErrorInfoSchema, { reason: "TOKEN_EXPIRED", domain: "wallwhale" }) },
  ]);
}

describe("Session", () => {
  let refreshes: string[];
  let storage: MemoryStorage;
  let session: Session;

  beforeEach(() => {
    vi.useFakeTimers();
    refreshes = [];
    storage = new MemoryStorage();
    let n = 0;
    const auth = {
      login: async () => ({ tokens: tokens(++n), user: undefined }),
      refresh: async ({ refreshToken }: { refreshToken: string }) => {
        refreshes.push(refreshToken);
        await Promise.resolve();
        return { tokens: tokens(++n) };
      },
      logout: async () => ({}),
      getCaller: async () => ({ scopes: ["download:read"] }),
    };
    session = new Session(() => auth as never, storage as unknown as Storage);
  });

  afterEach(() => vi.useRealTimers());

  test("keeps the refresh token in session storage and the access token in memory only", async () => {
    await session.login("a@example.test", "pw");
    expect([...storage.data.values()]).toEqual(["refresh-1"]);
    expect(await session.authorization()).toEqual(["authorization", "Bearer access-1"]);
  });

  test("renews once, before expiry, for any number of callers at the same time", async () => {
    await session.login("a@example.test", "pw");
    await Promise.all([session.renew(), session.renew(), session.renew()]);
    expect(refreshes).toEqual(["refresh-1"]); // a second use of a refresh token ends the session
    await vi.advanceTimersByTimeAsync(841_000); // 900 s tokens are renewed 60 s ahead
    expect(refreshes).toEqual(["refresh-1", "refresh-2"]);
    expect(await session.authorization()).toEqual(["authorization", "Bearer access-3"]);
  });

  test("recovers from an expired token by renewing, and from nothing else", async () => {
    await session.login("a@example.test", "pw");
    expect(await session.recover(new ConnectError("no", Code.PermissionDenied))).toBe(false);
    expect(await session.recover(expired())).toBe(true);
    expect(refreshes).toEqual(["refresh-1"]);
  });

  test("an API key is never stored", async () => {
    await session.useApiKey(" ww_key ");
    expect(storage.data.size).toBe(0);
    expect(await session.authorization()).toEqual(["x-api-key", "ww_key"]);
    await session.logout();
    expect(session.signedIn).toBe(false);
  });
});
