"""The drill's throwaway application database: schema, data and marker rows (no Prefect here)."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from dr_runbooks.postgres.connection import ConnInfo

__all__ = ["count_markers", "seed_application", "write_markers"]

_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email citext UNIQUE NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL,
    profile jsonb NOT NULL
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id),
    status text NOT NULL CHECK (status IN ('new', 'paid', 'shipped', 'cancelled')),
    total numeric(12, 2) NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX orders_user_idx ON orders (user_id);
CREATE TABLE order_items (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders(id),
    sku text NOT NULL,
    quantity int NOT NULL,
    price numeric(10, 2) NOT NULL
);
CREATE TABLE dr_drill_markers (
    id bigserial PRIMARY KEY,
    label text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE VIEW user_order_totals AS
    SELECT u.id, u.email, count(o.id) AS orders, coalesce(sum(o.total), 0) AS spent
    FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.id, u.email;
"""


def seed_application(conninfo: ConnInfo, database: str, rows: int = 100_000) -> dict[str, int]:
    """Create ``database`` with users, orders and order items (``rows`` in all) and settings a
    restore must carry over: an extension, a database-level setting, a role with a grant."""
    users = max(rows // 5, 1)
    orders = max(rows * 2 // 5, 1)
    items = max(rows - users - orders, 1)
    with conninfo.connect(dbname="postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'app_reader'").fetchone() is None:
            conn.execute("CREATE ROLE app_reader NOLOGIN")
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET statement_timeout = '5min'").format(
                sql.Identifier(database)
            )
        )
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO app_reader").format(sql.Identifier(database))
        )
    with conninfo.connect(dbname=database, autocommit=False) as conn:
        conn.execute(_SCHEMA)
        conn.execute(
            """INSERT INTO users (email, name, created_at, profile)
               SELECT 'user' || g || '@example.com', 'User ' || md5(g::text),
                      timestamptz '2024-01-01' + g * interval '7 minutes',
                      jsonb_build_object('plan', (ARRAY['free','pro','team'])[1 + g %% 3],
                                         'tags', jsonb_build_array(md5((g * 7)::text)))
               FROM generate_series(1, %s::bigint) g""",
            (users,),
        )
        conn.execute(
            """INSERT INTO orders (user_id, status, total, created_at)
               SELECT 1 + (g * 7919) %% %s, (ARRAY['new','paid','shipped','cancelled'])[1 + g %% 4],
                      round((g %% 997) * 1.37, 2),
                      timestamptz '2024-06-01' + g * interval '3 minutes'
               FROM generate_series(1, %s::bigint) g""",
            (users, orders),
        )
        conn.execute(
            """INSERT INTO order_items (order_id, sku, quantity, price)
               SELECT 1 + (g * 104729) %% %s, 'SKU-' || lpad((g %% 5000)::text, 5, '0'),
                      1 + g %% 5, round((g %% 313) * 0.99, 2)
               FROM generate_series(1, %s::bigint) g""",
            (orders, items),
        )
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_reader")
        conn.execute("INSERT INTO dr_drill_markers (label) VALUES ('before-backup')")
        conn.commit()
        conn.execute("ANALYZE")
    return {"users": users, "orders": orders, "order_items": items}


def write_markers(conninfo: ConnInfo, database: str, count: int = 5) -> list[dict[str, Any]]:
    """Write ``count`` marker rows, one transaction each (the writes a failure would lose)."""
    written = []
    with conninfo.connect(dbname=database) as conn:
        for index in range(count):
            row = conn.execute(
                "INSERT INTO dr_drill_markers (label) VALUES (%s) RETURNING id, written_at",
                (f"after-backup-{index + 1}",),
            ).fetchone()
            assert row is not None
            written.append({"id": int(row[0]), "written_at": row[1].isoformat()})
    return written


def count_markers(conninfo: ConnInfo, database: str) -> dict[str, int]:
    with conninfo.connect(dbname=database) as conn:
        rows = conn.execute(
            "SELECT label LIKE 'after-backup-%', count(*) FROM dr_drill_markers GROUP BY 1"
        ).fetchall()
    counts = {bool(r[0]): int(r[1]) for r in rows}
    return {"before_backup": counts.get(False, 0), "after_backup": counts.get(True, 0)}


def database_setting(conninfo: ConnInfo, database: str, name: str) -> str | None:
    with conninfo.connect(dbname=database) as conn:
        row = conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()
    return None if row is None else row[0]
