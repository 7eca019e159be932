// Who is signed in, and the credentials every call carries.
//
// Tokens: the access token (a 15-minute JWT) lives in memory only; the refresh token in
// sessionStorage, so a reload of this tab stays signed in while other tabs, other windows and a
// closed browser do not. The server sends both in the Login/Refresh body (there is no HttpOnly
// cookie to keep them in); the CSP (own scripts only, no inline script) is the guard against
// script injection reading them. A pasted API key is kept in memory only: a reload asks again.
import type { Client } from "@connectrpc/connect";

import type { AuthService, GetCallerResponse } from "./gen/wallwhale/v1/auth_pb.js";
import { reasonOf } from "./errors.js";

const REFRESH_KEY = "wallwhale.refresh";
// Renew this long before the access token expires (or at 3/4 of its life if that is sooner).
const RENEW_AHEAD_MS = 60_000;

type Credentials =
  | { kind: "none" }
  | { kind: "key"; apiKey: string }
  | { kind: "session"; accessToken: string; expiresAt: number; refreshToken: string };

export class Session {
  private credentials: Credentials = { kind: "none" };
  private renewing: Promise<void> | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private listeners = new Set<() => void>();
  caller: GetCallerResponse | undefined;

  constructor(
    private readonly auth: () => Pick<Client<typeof AuthService>, "login" | "refresh" | "logout" | "getCaller">,
    private readonly storage: Storage | undefined = globalThis.sessionStorage,
  ) {}

  get signedIn(): boolean {
    return this.credentials.kind !== "none" && this.caller !== undefined;
  }

  get isAdmin(): boolean {
    return this.caller?.scopes.some((s) => s === "admin:read" || s === "admin:*") ?? false;
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }

  /** The header this call should carry, renewing an access token that is about to expire. */
  async authorization(): Promise<[string, string] | undefined> {
    if (this.credentials.kind === "session" && this.credentials.expiresAt - Date.now() < 5_000) {
      await this.renew();
    }
    const c = this.credentials;
    if (c.kind === "key") return ["x-api-key", c.apiKey];
    if (c.kind === "session") return ["authorization", `Bearer ${c.accessToken}`];
    return undefined;
  }

  /** After a call failed: true when new credentials were obtained and the call may be repeated
   * (the access token had expired, e.g. while the tab slept and its renewal timer did not run). */
  async recover(error: unknown): Promise<boolean> {
    if (this.credentials.kind !== "session" || reasonOf(error) !== "TOKEN_EXPIRED") return false;
    await this.renew();
    return this.credentials.kind === "session";
  }

  async login(email: string, password: string): Promise<void> {
    const reply = await this.auth().login({ email, password });
    this.adopt(reply.tokens!);
    await this.loadCaller();
  }

  async useApiKey(apiKey: string): Promise<void> {
    this.credentials = { kind: "key", apiKey: apiKey.trim() };
    try {
      await this.loadCaller();
    } catch (error) {
      this.credentials = { kind: "none" };
      throw error;
    }
  }

  get canResume(): boolean {
    return !!this.storage?.getItem(REFRESH_KEY);
  }

  /** On page load: a refresh token left by this tab signs in again without a password. */
  async resume(): Promise<boolean> {
    const refreshToken = this.storage?.getItem(REFRESH_KEY);
    if (!refreshToken) return false;
    this.credentials = { kind: "session", accessToken: "", expiresAt: 0, refreshToken };
    try {
      await this.renew();
      await this.loadCaller();
      return true;
    } catch {
      this.forget();
      return false;
    }
  }

  async logout(): Promise<void> {
    const c = this.credentials;
    this.forget();
    if (c.kind === "session") {
      await this.auth().logout({ refreshToken: c.refreshToken }).catch(() => undefined);
    }
  }

  /** One renewal at a time: a refresh token works once, and the server ends the whole session
   * when a used one is presented again, so concurrent calls must share one Refresh. */
  renew(): Promise<void> {
    this.renewing ??= this.refreshOnce().finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  private async refreshOnce(): Promise<void> {
    const c = this.credentials;
    if (c.kind !== "session") return;
    try {
      const reply = await this.auth().refresh({ refreshToken: c.refreshToken });
      this.adopt(reply.tokens!);
    } catch (error) {
      this.forget();
      throw error;
    }
  }

  private adopt(tokens: {
    accessToken: string;
    refreshToken: string;
    accessTokenExpireTime?: { seconds: bigint; nanos: number };
  }): void {
    const expire = tokens.accessTokenExpireTime;
    const expiresAt = expire ? Number(expire.seconds) * 1000 : Date.now() + 60_000;
    this.credentials = {
      kind: "session",
      accessToken: tokens.accessToken,
      refreshToken: tokens.refreshToken,
      expiresAt,
    };
    this.storage?.setItem(REFRESH_KEY, tokens.refreshToken);
    clearTimeout(this.timer);
    const life = expiresAt - Date.now();
    const ahead = Math.min(RENEW_AHEAD_MS, life / 4);
    this.timer = setTimeout(() => void this.renew().catch(() => this.changed()), Math.max(life - ahead, 1_000));
  }

  private async loadCaller(): Promise<void> {
    this.caller = await this.auth().getCaller({});
    this.changed();
  }

  private forget(): void {
    clearTimeout(this.timer);
    this.credentials = { kind: "none" };
    this.caller = undefined;
    this.storage?.removeItem(REFRESH_KEY);
    this.changed();
  }
}
