"""API keys: created once, stored hashed in SQLite, checked on each call.

A key looks like `ask_<id>_<secret>`. Only the id and a SHA-256 hash of
the secret are stored (the secret is 256 random bits, so a fast hash is
safe, as with GitHub or Stripe tokens); the full key is shown once, when it
is created. Clients send it as `Authorization: Bearer <key>` or
`X-API-Key: <key>`.

A key may carry scopes beyond calling models. The one scope today is
`admin`: with auth on, the operator pages (`/metrics`, `/docs`, `/redoc`,
`/openapi.json`) answer only keys that have it. Keys are created without
it (`keys create --admin` gives it) and keys of an older database migrate
without it (`keys grant KEY admin` gives it).
"""

import asyncio
import dataclasses
import datetime
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterable
from collections.abc import Mapping

from aiservice_kit.serving._db import open_database
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving.config import KEY_CACHE_SIZE
from aiservice_kit.serving.config import KEY_CACHE_TTL_S

KEY_PREFIX = "ask_"
#: The scope of the operator pages (metrics and API docs).
ADMIN_SCOPE = "admin"
#: Every scope a key may have.
SCOPES = (ADMIN_SCOPE,)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """`scopes` checked against `SCOPES`, sorted and without repeats."""
    if isinstance(scopes, str):
        scopes = [scopes]
    scopes = list(scopes)
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(
            f"`scopes` must be among {', '.join(SCOPES)}. "
            f"Received: scopes={scopes!r}"
        )
    return tuple(sorted(set(scopes)))


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """A stored API key (never the secret).

    Attributes:
        id: str. Public identifier (the part after `ask_`).
        name: str. Who the key belongs to.
        plan: str. The rate-limit and quota plan.
        models: tuple of str or None. Models the key may call (None: all).
        created_at: str. ISO-8601 UTC.
        revoked_at: str or None. ISO-8601 UTC once revoked.
        scopes: tuple of str. What the key may do beyond calling its
            models (`"admin"`: read the operator pages).
    """

    id: str
    name: str
    plan: str
    models: tuple[str, ...] | None
    created_at: str
    revoked_at: str | None = None
    scopes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """A JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["models"] = None if self.models is None else list(self.models)
        data["scopes"] = list(self.scopes)
        return data

    def has_scope(self, scope: str) -> bool:
        """Whether this key has `scope` (see `SCOPES`)."""
        return scope in self.scopes

    def may_use(self, model: str) -> bool:
        """Whether this key may call `model`."""
        return self.models is None or model in self.models


class KeyStore:
    """API keys in a table of the shared database (SQLite or PostgreSQL).

    Args:
        path: str or Path. The SQLite file (created, mode 0600, if
            missing), a `sqlite:///...` URL, or a `postgresql://` URL;
            see `_db.open_database`.

    Example:
    ```python
    store = KeyStore("service.db")
    key, record = store.create("acme", plan="free")
    print(key)  # shown once
    store.verify(key).name  # "acme"
    store.create("prometheus", plan="free", scopes=["admin"])
    ```
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self._db = open_database(path)
        self.path = self._db.url

    def create(
        self,
        name: str,
        plan: str,
        models: Iterable[str] | None = None,
        scopes: Iterable[str] = (),
    ) -> tuple[str, ApiKey]:
        """Creates a key; returns `(secret_key, record)`.

        Args:
            name: str. Owner of the key (unique among active keys).
            plan: str. Plan name (rate limit and monthly quota).
            models: iterable of str or None. Models it may call; None: all.
            scopes: iterable of str. Scopes among `SCOPES` (`"admin"`
                reads the operator pages); none by default.

        Returns:
            The full key (store it: it is not kept) and its record.

        Raises:
            ValueError: for an empty or duplicate name or plan, or an
                unknown scope.
        """
        for arg, value in (("name", name), ("plan", plan)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(
                    f"`{arg}` must be a non-empty string. "
                    f"Received: {arg}={value!r}"
                )
        if isinstance(models, str):
            models = [models]
        model_list = None if models is None else tuple(sorted(set(models)))
        if model_list is not None and not model_list:
            raise ValueError(
                "`models` must name at least one model, or be None for all. "
                f"Received: models={models!r}"
            )
        scope_list = _scopes(scopes)
        if any(key.name == name for key in self.list()):
            raise ValueError(
                f"`name` must be unique among active keys; {name!r} exists. "
                "Revoke it first or choose another name. "
                f"Received: name={name!r}"
            )
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        record = ApiKey(
            key_id, name, plan, model_list, _now(), scopes=scope_list
        )
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO api_keys (id, name, plan, models, "
                "secret_sha256, created_at, revoked_at, scopes) "
                "VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                (
                    key_id,
                    name,
                    plan,
                    None if model_list is None else json.dumps(model_list),
                    _hash(secret),
                    record.created_at,
                    " ".join(scope_list),
                ),
            )
        return f"{KEY_PREFIX}{key_id}_{secret}", record

    def _rows(self, where: str = "", params: tuple = ()) -> list[ApiKey]:
        with self._db.read() as tx:
            rows = tx.execute(
                "SELECT id, name, plan, models, created_at, revoked_at, "
                f"scopes FROM api_keys {where} ORDER BY created_at, id",
                params,
            )
        return [
            ApiKey(
                row[0],
                row[1],
                row[2],
                None if row[3] is None else tuple(json.loads(row[3])),
                row[4],
                row[5],
                tuple(row[6].split()),
            )
            for row in rows
        ]

    def list(self, include_revoked: bool = False) -> list[ApiKey]:
        """The keys (active only unless `include_revoked`)."""
        if include_revoked:
            return self._rows()
        return self._rows("WHERE revoked_at IS NULL")

    def get(self, key_id: str) -> ApiKey | None:
        """The key with this id (revoked or not), or None."""
        rows = self._rows("WHERE id = ?", (key_id,))
        return rows[0] if rows else None

    def find(self, id_or_name: str) -> ApiKey:
        """The active key with this id or name.

        Raises:
            ValueError: when no active key matches.
        """
        for key in self.list():
            if id_or_name in (key.id, key.name, f"{KEY_PREFIX}{key.id}"):
                return key
        raise ValueError(
            "`key` must be the id or name of an active API key (see `keys "
            f"list`). Received: key={id_or_name!r}"
        )

    def revoke(self, id_or_name: str) -> ApiKey:
        """Revokes a key by id or name; returns the revoked record.

        Raises:
            ValueError: when no active key matches.
        """
        key = self.find(id_or_name)
        revoked_at = _now()
        with self._db.transaction() as tx:
            tx.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ?",
                (revoked_at, key.id),
            )
        return dataclasses.replace(key, revoked_at=revoked_at)

    def grant(self, id_or_name: str, scope: str) -> ApiKey:
        """Gives an active key a scope; returns the updated record.

        Args:
            id_or_name: str. The key's id or name.
            scope: str. One of `SCOPES`.

        Returns:
            The key's record with the scope.

        Raises:
            ValueError: when no active key matches, or an unknown scope.

        Example:
        ```python
        store.grant("prometheus", "admin")
        ```
        """
        key = self.find(id_or_name)
        return self._set_scopes(key, _scopes([*key.scopes, scope]))

    def withdraw(self, id_or_name: str, scope: str) -> ApiKey:
        """Takes a scope from an active key; returns the updated record.

        Args:
            id_or_name: str. The key's id or name.
            scope: str. One of `SCOPES`.

        Returns:
            The key's record without the scope.

        Raises:
            ValueError: when no active key matches, or an unknown scope.

        Example:
        ```python
        store.withdraw("prometheus", "admin")
        ```
        """
        key = self.find(id_or_name)
        _scopes([scope])
        return self._set_scopes(key, tuple(s for s in key.scopes if s != scope))

    def _set_scopes(self, key: ApiKey, scopes: tuple[str, ...]) -> ApiKey:
        with self._db.transaction() as tx:
            tx.execute(
                "UPDATE api_keys SET scopes = ? WHERE id = ?",
                (" ".join(scopes), key.id),
            )
        return dataclasses.replace(key, scopes=scopes)

    def verify(self, secret_key: str) -> ApiKey | None:
        """The active key matching a full secret key, or None."""
        if not isinstance(secret_key, str) or not secret_key.startswith(
            KEY_PREFIX
        ):
            return None
        key_id, _, secret = secret_key[len(KEY_PREFIX) :].partition("_")
        if not key_id or not secret:
            return None
        with self._db.read() as tx:
            rows = tx.execute(
                "SELECT secret_sha256, revoked_at FROM api_keys WHERE id = ?",
                (key_id,),
            )
        row = rows[0] if rows else None
        if row is None or row[1] is not None:
            return None
        if not hmac.compare_digest(row[0], _hash(secret)):
            return None
        return self.get(key_id)

    def close(self) -> None:
        """Closes the database connections."""
        self._db.close()


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The key sent as `Authorization: Bearer` or `X-API-Key`, or None.

    Raises:
        ServingError: 401 for an Authorization header of another scheme.
    """
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ServingError(
                "The Authorization header must be 'Bearer <API key>'.",
                401,
                {"WWW-Authenticate": "Bearer"},
            )
        return token.strip()
    api_key = headers.get("x-api-key")
    return api_key.strip() if api_key else None


class Authenticator:
    """Decides who is calling: 401 when a key is needed and missing or bad.

    Args:
        store: KeyStore or None. Where keys are checked.
        required: bool. When False, calls without a key are anonymous
            (a key that is sent must still be valid).
        cache_ttl_s: float. How long a verified key is trusted before it is
            looked up again (revocations take effect within this time).
    """

    def __init__(
        self,
        store: KeyStore | None,
        required: bool,
        cache_ttl_s: float = KEY_CACHE_TTL_S,
    ) -> None:
        if required and store is None:
            raise ValueError(
                "Authentication needs a key store; pass `db=` or disable auth."
            )
        self.store = store
        self.required = required
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    def authenticate(
        self, headers: Mapping[str, str], required: bool | None = None
    ) -> ApiKey | None:
        """The calling key, or None for an anonymous call when allowed.

        Raises:
            ServingError: 401 for a missing (when required) or unknown key.
        """
        required = self.required if required is None else required
        secret_key = key_from_headers(headers)
        challenge = {"WWW-Authenticate": "Bearer"}
        if secret_key is None:
            if required:
                raise ServingError(
                    "Missing API key: send 'Authorization: Bearer <API key>' "
                    "or 'X-API-Key: <API key>'.",
                    401,
                    challenge,
                )
            return None
        now = time.monotonic()
        cached = self._cache.get(secret_key)
        if cached is not None and now - cached[0] < self.cache_ttl_s:
            key = cached[1]
        else:
            key = None if self.store is None else self.store.verify(secret_key)
            self._remember(secret_key, now, key)
        return self._checked(key)

    def _remember(self, secret_key: str, now: float, key: ApiKey | None):
        if len(self._cache) > KEY_CACHE_SIZE:
            self._cache.clear()
        self._cache[secret_key] = (now, key)

    @staticmethod
    def _checked(key: ApiKey | None) -> ApiKey:
        if key is None:
            raise ServingError(
                "Invalid API key (unknown or revoked).",
                401,
                {"WWW-Authenticate": "Bearer"},
            )
        return key

    async def aauthenticate(
        self, headers: Mapping[str, str], required: bool | None = None
    ) -> ApiKey | None:
        """`authenticate` with the key lookup on a thread (not the loop).

        Raises:
            ServingError: 401 for a missing (when required) or unknown key.
        """
        secret_key = key_from_headers(headers)
        now = time.monotonic()
        cached = None if secret_key is None else self._cache.get(secret_key)
        if (
            secret_key is None
            or self.store is None
            or (cached is not None and now - cached[0] < self.cache_ttl_s)
        ):
            return self.authenticate(headers, required)
        key = await asyncio.to_thread(self.store.verify, secret_key)
        self._remember(secret_key, now, key)
        return self._checked(key)

    @staticmethod
    def require_scope(key: ApiKey | None, scope: str, what: str) -> None:
        """403 when `key` lacks `scope` (None: an anonymous call, allowed).

        Args:
            key: ApiKey or None. The calling key.
            scope: str. The scope needed (one of `SCOPES`).
            what: str. What the call reads, for the message.

        Raises:
            ServingError: 403 naming the scope and how to grant it.
        """
        if key is not None and not key.has_scope(scope):
            raise ServingError(
                f"API key '{key.name}' may not read {what}: it needs the "
                f"'{scope}' scope. Use a key created with `aiservice-kit "
                f"keys create --{scope}`, or grant it with `aiservice-kit "
                f"keys grant {key.name} {scope}`.",
                403,
            )

    @staticmethod
    def authorize(key: ApiKey | None, model: str) -> None:
        """403 when `key` may not call `model`."""
        if key is not None and not key.may_use(model):
            raise ServingError(
                f"API key '{key.name}' may not use model '{model}' "
                f"(allowed: {', '.join(key.models or ())}).",
                403,
            )
