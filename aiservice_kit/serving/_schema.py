"""The database schema, created and migrated by the server.

The version is kept in `schema_version`; `migrate` applies, in one
transaction, every migration newer than it (a PostgreSQL advisory lock
makes replicas that start together take turns). A database written by a
newer server is refused rather than misread.

Tables:

- `api_keys`: the keys (`auth.KeyStore`) and their scopes.
- `usage`: the ledger, one row per metered call (and the API it used);
  `request_id` is unique, so a call can be settled only once.
- `key_usage`: instances of successful calls per key and calendar month
  (UTC), kept up to date in the transaction that inserts the ledger rows;
  a row is created from the ledger the first time a month is used.
- `reservations`: instances of calls in flight, reserved in the
  transaction that checks the quota, deleted when the call settles.
- `servers`: one row per running server, with its heartbeat; the
  reservations of a server whose heartbeat stopped are released.
- `rate_buckets`: the token bucket of each key, shared by every replica.
"""

from aiservice_kit.serving._db import Database

#: Types that differ between the dialects.
_TYPES = {
    "sqlite": {"real": "REAL", "seq": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {
        "real": "DOUBLE PRECISION",
        "seq": "BIGSERIAL PRIMARY KEY",
    },
}

#: (version, statements); `{real}` and `{seq}` are filled in per dialect.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE IF NOT EXISTS api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                plan TEXT NOT NULL,
                models TEXT,
                secret_sha256 TEXT NOT NULL,
                created_at TEXT NOT NULL,
                revoked_at TEXT
            )""",
            """CREATE TABLE IF NOT EXISTS usage (
                seq {seq},
                request_id TEXT NOT NULL,
                time {real} NOT NULL,
                key_id TEXT,
                key_name TEXT,
                model TEXT NOT NULL,
                version INTEGER,
                instances INTEGER NOT NULL,
                request_bytes INTEGER NOT NULL,
                response_bytes INTEGER NOT NULL,
                latency_ms {real} NOT NULL,
                status INTEGER NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS usage_key_time ON usage (key_id, time)",
        ),
    ),
    (
        2,
        (
            "CREATE UNIQUE INDEX IF NOT EXISTS usage_request_id "
            "ON usage (request_id)",
            """CREATE TABLE IF NOT EXISTS key_usage (
                key_id TEXT NOT NULL,
                month TEXT NOT NULL,
                used INTEGER NOT NULL,
                PRIMARY KEY (key_id, month)
            )""",
            """CREATE TABLE IF NOT EXISTS servers (
                server_id TEXT PRIMARY KEY,
                started {real} NOT NULL,
                heartbeat {real} NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS reservations (
                id TEXT PRIMARY KEY,
                key_id TEXT NOT NULL,
                month TEXT NOT NULL,
                instances INTEGER NOT NULL,
                server_id TEXT NOT NULL,
                created {real} NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS reservations_key "
            "ON reservations (key_id, month)",
            "CREATE INDEX IF NOT EXISTS reservations_server "
            "ON reservations (server_id)",
            """CREATE TABLE IF NOT EXISTS rate_buckets (
                key_id TEXT PRIMARY KEY,
                tokens {real} NOT NULL,
                updated {real} NOT NULL
            )""",
        ),
    ),
    (
        3,
        # The API of each call (`predict`, `explain`), priced separately.
        ("ALTER TABLE usage ADD COLUMN api TEXT NOT NULL DEFAULT 'predict'",),
    ),
    (
        4,
        # The scopes of each key, space-separated (`admin` reads the
        # operator pages). Existing keys get none: an operator grants
        # `admin` with `aiservice-kit keys grant KEY admin`.
        ("ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT ''",),
    ),
)

#: The schema version this server writes.
SCHEMA_VERSION = MIGRATIONS[-1][0]

#: Any constant: the advisory lock replicas take while migrating.
_MIGRATION_LOCK = 0x61697376


def migrate(database: Database) -> int:
    """Creates the tables or brings them up to `SCHEMA_VERSION`.

    Args:
        database: Database. An open database.

    Returns:
        The schema version before the migration (0 for a new database).

    Raises:
        RuntimeError: when the database has a newer schema.

    Example:
    ```python
    from aiservice_kit.serving._db import SQLiteDatabase
    migrate(SQLiteDatabase("service.db"))  # 0 the first time
    ```
    """
    types = _TYPES[database.dialect]
    with database.transaction() as tx:
        if database.dialect == "postgresql":
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER NOT NULL)"
        )
        current = tx.execute("SELECT MAX(version) FROM schema_version")[0][0]
        current = current or 0
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"The database has schema version {current}; this server "
                f"knows versions up to {SCHEMA_VERSION}. Upgrade "
                "aiservice_kit on this host."
            )
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                tx.execute(statement.format(**types))
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?)", (version,)
            )
    return current
