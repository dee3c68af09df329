"""The job journal in PostgreSQL, for a job queue (``KB_QUEUE_URL``): every API replica and worker reads and
writes the same jobs, so any replica answers ``GET /v1/jobs/{id}`` for a job another one took and a worker on
another machine ran. Uploads wait for their worker in ``Payloads`` on a volume they all mount."""

from __future__ import annotations

import time
from typing import Any, cast

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from kb_service.core.errors import StoreError
from kb_service.ingest.sources import SourceItem
from kb_service.jobs.journal import JOB_FIELDS, Payloads, Recorded, job_of, job_row
from kb_service.jobs.model import FINISHED, Job, JobStatus

TABLE = "kb_jobs"
_TYPES = {"chunks": "integer", "created_at": "double precision", "updated_at": "double precision"}


class PgJobJournal(Recorded):
    """Jobs in the ``kb_jobs`` table, over the pgvector store's own connection pool (the store closes it)."""

    def __init__(self, pool: ConnectionPool, payloads: Payloads) -> None:
        self.payloads = payloads
        self._pool = pool
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(_TYPES.get(n, "text"))) for n in JOB_FIELDS[1:]
        )
        try:
            with pool.connection() as conn, conn.transaction():
                # Replicas and workers start together: one of them creates the table, the others wait for it.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (TABLE,))
                conn.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, {}, item text)").format(
                        sql.Identifier(TABLE), columns
                    )
                )
                for n in JOB_FIELDS[1:]:  # a table written by an earlier version
                    conn.execute(
                        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                            sql.Identifier(TABLE), sql.Identifier(n), sql.SQL(_TYPES.get(n, "text"))
                        )
                    )
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the job table in PostgreSQL: {exc}") from exc

    def _execute(self, query: sql.Composed | sql.SQL, params: Any = None) -> list[dict[str, Any]]:
        try:
            with self._pool.connection() as conn:
                cur = conn.execute(query, params)
                return cast(list[dict[str, Any]], cur.fetchall()) if cur.description else []
        except psycopg.OperationalError as exc:
            raise StoreError(f"PostgreSQL is unreachable: {exc}") from exc

    def _write(self, job: Job, item: str | None) -> None:
        row = job_row(job)
        names = [sql.Identifier(n) for n in JOB_FIELDS]
        self._execute(
            sql.SQL(
                "INSERT INTO {t} ({names}, item) VALUES ({marks}, %s) ON CONFLICT (id) DO UPDATE SET {updates}, "
                "item = coalesce(excluded.item, {t}.item)"
            ).format(
                t=sql.Identifier(TABLE),
                names=sql.SQL(", ").join(names),
                marks=sql.SQL(", ").join(sql.Placeholder() for _ in names),
                updates=sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(n) for n in names[1:]),
            ),
            [row[n] for n in JOB_FIELDS] + [item],
        )

    def load(self, limit: int) -> list[tuple[Job, SourceItem | None]]:
        """The most recent ``limit`` jobs, oldest first (finished ones beyond those are forgotten)."""
        t = sql.Identifier(TABLE)
        self._execute(
            sql.SQL(
                "DELETE FROM {t} WHERE status IN (%s, %s) AND id NOT IN "
                "(SELECT id FROM {t} ORDER BY created_at DESC LIMIT %s)"
            ).format(t=t),
            (str(JobStatus.READY), str(JobStatus.FAILED), limit),
        )
        rows = self._execute(sql.SQL("SELECT * FROM {t} ORDER BY created_at DESC LIMIT %s").format(t=t), (limit,))
        out = []
        for row in reversed(rows):
            job = job_of({n: row[n] for n in JOB_FIELDS})
            out.append((job, None if job.status in FINISHED else self.payloads.get(job.id, row["item"])))
        return out

    def get(self, job_id: str) -> Job | None:
        rows = self._execute(
            sql.SQL("SELECT {} FROM {} WHERE id = %s").format(
                sql.SQL(", ").join(sql.Identifier(n) for n in JOB_FIELDS), sql.Identifier(TABLE)
            ),
            (job_id,),
        )
        return job_of(rows[0]) if rows else None

    def item(self, job_id: str) -> SourceItem | None:
        rows = self._execute(sql.SQL("SELECT item FROM {} WHERE id = %s").format(sql.Identifier(TABLE)), (job_id,))
        return self.payloads.get(job_id, rows[0]["item"]) if rows else None

    def touch(self, job_ids: list[str]) -> None:
        """Renew the lease of running jobs (their ``updated_at``)."""
        if job_ids:
            self._execute(
                sql.SQL("UPDATE {} SET updated_at = %s WHERE id = ANY(%s) AND status NOT IN (%s, %s)").format(
                    sql.Identifier(TABLE)
                ),
                (time.time(), job_ids, str(JobStatus.READY), str(JobStatus.FAILED)),
            )

    def leased_sources(self, kb: str, kb_uid: str, since: float) -> set[str]:
        """The sources of ``kb``'s unfinished jobs renewed since ``since``: documents that a worker may be writing."""
        rows = self._execute(
            sql.SQL(
                "SELECT DISTINCT source FROM {} WHERE kb = %s AND kb_uid = %s AND status NOT IN (%s, %s) "
                "AND updated_at >= %s"
            ).format(sql.Identifier(TABLE)),
            (kb, kb_uid, str(JobStatus.READY), str(JobStatus.FAILED), since),
        )
        return {r["source"] for r in rows}

    def close(self) -> None:
        """Nothing of its own to close: the pool is the store's."""
