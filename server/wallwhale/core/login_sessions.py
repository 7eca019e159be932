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

import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import passwords
from wallwhale.core.identity import Principal, role_scopes
from wallwhale.core.tokens import new_token, token_hash
from wallwhale.db.models import RefreshToken, User
from wallwhale.errors import InvalidArgument, Unauthenticated
from wallwhale.ids import new_id

ALGORITHM = "HS256"
ISSUER = "wallwhale"
AUDIENCE = "wallwhale-api"
REFRESH_PREFIX = "wwr_"


@functools.cache
def _dummy_hash() -> str:
    """Verified when the e-mail is unknown, so that a wrong e-mail costs the same time as a wrong password.

    Made on the first unknown e-mail, not at import, where it cost about 0.3 s of every start-up.
    """
    return passwords.hash_password(secrets.token_urlsafe(16))


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
    ):
        self._sessions = sessions
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
        async with self._sessions.begin() as session:
            user = await session.scalar(select(User).where(User.email == email.strip().lower()))
            if user is None:
                passwords.verify_password(_dummy_hash(), password)
                raise wrong
            if not passwords.verify_password(user.password_hash, password):
                raise wrong
            if user.disabled:
                raise Unauthenticated("this user is disabled", reason="USER_DISABLED")
            if passwords.needs_rehash(user.password_hash):
                user.password_hash = passwords.hash_password(password)
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
        async with self._sessions.begin() as session:
            user = await session.get(User, principal.user_id)
            if user is None or not passwords.verify_password(user.password_hash, current):
                raise InvalidArgument.field("current_password", "is wrong")
            user.password_hash = passwords.hash_password(new)
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
            revoked = await session.scalar(
                select(RefreshToken.id)
                .where(RefreshToken.family_id == claims["sid"], RefreshToken.revoke_time.is_not(None))
                .limit(1)
            )
        if user is None or revoked is not None:
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
        if not isinstance(claims.get("exp"), int | float):
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
