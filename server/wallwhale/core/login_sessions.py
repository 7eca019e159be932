"""Login sessions for people: short-lived access JWTs and rotating, single-use refresh tokens.

- Access tokens are HS256 JWTs (the algorithm is pinned on both sides: no `none`, no key
  confusion) with issuer, audience, expiry and the session id (`sid`). Expiry is checked against
  the server's clock, so tests can move it.
- A refresh token is a core.tokens token ("wwr_"); only its hash is stored. Each use marks it
  used and issues a new one in the same family (one family = one login). A used token shown
  again means it leaked: the whole family is revoked, which also ends its access tokens at their
  next call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import passwords
from wallwhale.core.identity import Principal
from wallwhale.core.limits import NO_LIMITS, Limits
from wallwhale.core.login_throttle import LoginThrottle
from wallwhale.core.scopes import role_scopes
from wallwhale.core.tokens import new_token, token_hash
from wallwhale.db.models import RefreshToken, User
from wallwhale.errors import InvalidArgument, Unauthenticated
from wallwhale.ids import new_id

ALGORITHM = "HS256"
ISSUER = "wallwhale"
AUDIENCE = "wallwhale-api"
REFRESH_PREFIX = "wwr_"


def _issued_before(claims: dict[str, Any], changed: datetime | None) -> bool:
    # iat has whole seconds: a token of the same second as the change is let through (its session,
    # if it predates the change, was revoked with it).
    return changed is not None and int(claims["iat"]) < int(changed.timestamp())


@dataclass(frozen=True)
class Tokens:
    access_token: str
    access_expire_time: datetime
    refresh_token: str
    refresh_expire_time: datetime


@dataclass(frozen=True)
class ClientInfo:
    user_agent: str = ""
    address: str = ""


class LoginSessions:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        secret: str,
        clock: Callable[[], datetime],
        access_ttl: timedelta,
        refresh_ttl: timedelta,
        throttle: LoginThrottle | None = None,
        user_defaults: Limits = NO_LIMITS,
    ):
        # Every user's limits unless an admin set their own (core.limits).
        self._user_defaults = user_defaults
        self._sessions = sessions
        self._throttle = throttle
        self._secret = secret
        self._clock = clock
        self._access_ttl = access_ttl
        self._refresh_ttl = refresh_ttl

    async def login(self, email: str, password: str, client: ClientInfo) -> tuple[Tokens, User]:
        if not email.strip():
            raise InvalidArgument.field("email", "is required")
        if not password:
            raise InvalidArgument.field("password", "is required")
        wrong = Unauthenticated("the e-mail or the password is wrong", reason="CREDENTIALS_INVALID")
        email = email.strip().lower()
        if self._throttle is not None:
            await self._throttle.check(email, client.address)
        # The hash is verified outside any transaction, on the hash pool (core.passwords): a
        # short read, the verification, then a short write that rechecks what was read.
        async with self._sessions() as session:
            user = await session.scalar(select(User).where(User.email == email))
        verified_hash = user.password_hash if user is not None else None
        # A disabled user gets the same answer as a wrong password, whether the password is right
        # or not: a distinct answer would tell a guesser that the password was right.
        if (
            not await passwords.verify_password_async(verified_hash, password)
            or user is None
            or user.disabled
        ):
            if self._throttle is not None:
                await self._throttle.failed(email, client.address)
            raise wrong
        rehashed = (
            await passwords.hash_password_async(password)
            if passwords.needs_rehash(user.password_hash)
            else None
        )
        async with self._sessions.begin() as session:
            user = await session.get(User, user.id)
            # Changed, disabled or deleted while the hash was verified: the verification is stale.
            if user is None or user.password_hash != verified_hash or user.disabled:
                raise wrong
            if rehashed is not None:
                user.password_hash = rehashed
            user.last_login_time = self._clock()
            tokens = await self._issue(session, user, new_id(), client)
        return tokens, user

    async def refresh(self, refresh_token: str, client: ClientInfo) -> Tokens:
        invalid = Unauthenticated("the refresh token is not valid", reason="CREDENTIALS_INVALID")
        if not refresh_token.startswith(REFRESH_PREFIX):
            raise invalid
        now = self._clock()
        async with self._sessions.begin() as session:
            stored = await session.scalar(
                select(RefreshToken)
                .where(RefreshToken.token_hash == token_hash(refresh_token))
                .with_for_update()
            )
            if stored is None or stored.revoke_time is not None:
                raise invalid
            if stored.used_time is not None:
                await self._revoke(session, RefreshToken.family_id == stored.family_id, now)
                reused = True
            else:
                reused = False
                if stored.expire_time <= now:
                    raise Unauthenticated("the refresh token has expired", reason="TOKEN_EXPIRED")
                user = await session.get(User, stored.user_id)
                if user is None or user.disabled:
                    raise Unauthenticated("this user is disabled", reason="USER_DISABLED")
                stored.used_time = now
                tokens = await self._issue(session, user, stored.family_id, client)
        if reused:  # raised after the commit, so the revocation is stored
            raise Unauthenticated(
                "this refresh token was already used; the session is ended", reason="REFRESH_TOKEN_REUSED"
            )
        return tokens

    async def logout(self, refresh_token: str, all_sessions: bool) -> None:
        """Ends the token's session (or all its user's); an unknown token is not an error."""
        now = self._clock()
        async with self._sessions.begin() as session:
            stored = await session.scalar(
                select(RefreshToken).where(RefreshToken.token_hash == token_hash(refresh_token))
            )
            if stored is None:
                return
            scope = (
                RefreshToken.user_id == stored.user_id
                if all_sessions
                else RefreshToken.family_id == stored.family_id
            )
            await self._revoke(session, scope, now)

    async def change_password(self, principal: Principal, current: str, new: str) -> None:
        if principal.kind != "user":
            raise InvalidArgument.field(
                "current_password", "only a logged-in person can change their password"
            )
        if len(new) < passwords.MIN_PASSWORD_LENGTH:
            raise InvalidArgument.field(
                "new_password", f"must be at least {passwords.MIN_PASSWORD_LENGTH} characters"
            )
        async with self._sessions() as session:
            user = await session.get(User, principal.user_id)
        verified_hash = user.password_hash if user is not None else None
        if not await passwords.verify_password_async(verified_hash, current):
            raise InvalidArgument.field("current_password", "is wrong")
        new_hash = await passwords.hash_password_async(new)
        async with self._sessions.begin() as session:
            user = await session.get(User, principal.user_id)
            if user is None or user.password_hash != verified_hash:
                raise InvalidArgument.field("current_password", "is wrong")
            user.password_hash = new_hash
            # Every other session ends; the one making the change goes on.
            await self._revoke(
                session,
                (RefreshToken.user_id == user.id) & (RefreshToken.family_id != principal.session_id),
                self._clock(),
            )

    async def authenticate(self, token: str) -> Principal:
        claims = self._decode(token)
        async with self._sessions() as session:
            user = await session.get(User, claims["sub"])
            rows, revoked = (
                await session.execute(
                    select(func.count(), func.count(RefreshToken.revoke_time)).where(
                        RefreshToken.family_id == claims["sid"], RefreshToken.user_id == claims["sub"]
                    )
                )
            ).one()
        # A session must exist and be live; a token from before the last credential change
        # (password reset, disable) is refused even if its session were somehow live.
        if user is None or rows == 0 or revoked > 0 or _issued_before(claims, user.credentials_changed_time):
            raise Unauthenticated("this session has ended; log in again", reason="CREDENTIALS_INVALID")
        if user.disabled:
            raise Unauthenticated("this user is disabled", reason="USER_DISABLED")
        return Principal(
            kind="user",
            user_id=user.id,
            role=user.role,
            scopes=role_scopes(user.role),
            display=user.email,
            session_id=claims["sid"],
            user_limits=Limits.of(user).over(self._user_defaults),
        )

    def _decode(self, token: str) -> dict[str, Any]:
        invalid = Unauthenticated("the access token is not valid", reason="CREDENTIALS_INVALID")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                # Expiry is compared with our clock below, not the library's.
                options={"require": ["exp", "iat", "sub", "sid"], "verify_exp": False},
            )
        except jwt.PyJWTError:
            raise invalid from None
        if not isinstance(claims.get("exp"), int | float) or not isinstance(claims.get("iat"), int | float):
            raise invalid
        # Ids go into queries as they are: only strings, as _issue writes them.
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("sid"), str):
            raise invalid
        if claims["exp"] <= self._clock().timestamp():
            raise Unauthenticated("the access token has expired; refresh it", reason="TOKEN_EXPIRED")
        return claims

    async def _issue(self, session: AsyncSession, user: User, family_id: str, client: ClientInfo) -> Tokens:
        now = self._clock()
        access_expire = now + self._access_ttl
        access = jwt.encode(
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": user.id,
                "sid": family_id,
                "role": user.role.value,
                "iat": int(now.timestamp()),
                "exp": int(access_expire.timestamp()),
                "jti": new_id(),
            },
            self._secret,
            algorithm=ALGORITHM,
        )
        refresh = new_token(REFRESH_PREFIX)
        refresh_expire = now + self._refresh_ttl
        session.add(
            RefreshToken(
                user_id=user.id,
                family_id=family_id,
                token_hash=token_hash(refresh),
                create_time=now,
                expire_time=refresh_expire,
                user_agent=client.user_agent[:256],
                client_address=client.address[:64],
            )
        )
        return Tokens(access, access_expire, refresh, refresh_expire)

    @staticmethod
    async def _revoke(session: AsyncSession, where: Any, now: datetime) -> None:
        await session.execute(
            update(RefreshToken).where(where, RefreshToken.revoke_time.is_(None)).values(revoke_time=now)
        )
