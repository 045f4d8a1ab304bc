"""HTTP sinks: Elasticsearch/OpenSearch ``_bulk`` and Loki's push API.

Elasticsearch / OpenSearch (Bulk API): ``POST <url>/_bulk`` with
``Content-Type: application/x-ndjson``; per event an action line
``{"create":{"_index":"<index>","_id":"<event_id>"}}`` and the document line,
each ending in ``\\n`` (the body must end with a newline). ``create`` with the
event id as ``_id`` makes redelivery idempotent: a second copy answers 409
(version conflict), which counts as delivered. Any other item error fails the
batch. The document is the event plus ``@timestamp`` (= ``ts``) for Kibana.

Loki (``POST <url>/loki/api/v1/push``, JSON): streams keyed by a few bounded
labels (``service_name="sqlbastion"``, ``kind``, ``backend``, ``decision``);
each value is ``["<unix ns as a string>", "<event JSON>"]``. Loki ignores an
exact duplicate (same stream, timestamp and line), so redelivery is harmless.
Success is any 2xx (Loki answers 204).
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Sequence
from typing import Any

from sqlbastion.audit.sinks.base import Sink, SinkError, event_json
from sqlbastion.audit.sinks.httpclient import HTTPError, request
from sqlbastion.audit.spool import SpooledRecord
from sqlbastion.config import SecretRef
from sqlbastion.settings_schema import SecretUnavailable

__all__ = ["ElasticsearchSink", "LokiSink", "bulk_body", "loki_body", "ts_to_ns"]


def ts_to_ns(ts: str) -> int:
    """``2026-01-02T03:04:05.123456Z`` → Unix nanoseconds."""
    whole, _, frac = ts.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])


def bulk_body(records: Sequence[SpooledRecord], index: str) -> bytes:
    lines = []
    for r in records:
        action = {"create": {"_index": index, "_id": r.event["event_id"]}}
        doc = {"@timestamp": r.event["ts"], **r.event}
        lines.append(json.dumps(action, separators=(",", ":")))
        lines.append(event_json(doc))
    return ("\n".join(lines) + "\n").encode("utf-8")


def loki_body(records: Sequence[SpooledRecord]) -> bytes:
    streams: dict[tuple[str, str, str], list[list[str]]] = {}
    for r in records:
        e = r.event
        key = (str(e.get("kind") or "unknown"), str(e.get("backend") or "none"), str(e.get("decision") or "none"))
        streams.setdefault(key, []).append([str(ts_to_ns(e["ts"])), event_json(e)])
    body = {
        "streams": [
            {
                "stream": {"service_name": "sqlbastion", "kind": k, "backend": b, "decision": d},
                "values": sorted(values, key=lambda v: int(v[0])),
            }
            for (k, b, d), values in streams.items()
        ]
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class _HTTPSink(Sink):
    def __init__(self, *, url: str, auth_header: SecretRef | None, name: str, required: bool, batch_size: int) -> None:
        super().__init__(name=name, required=required, batch_size=batch_size)
        self.url = url.rstrip("/")
        self._auth = auth_header

    def headers(self, content_type: str) -> dict[str, str]:
        h = {"Content-Type": content_type, "User-Agent": "sqlbastion-audit"}
        if self._auth is not None:
            try:
                h["Authorization"] = self._auth.reveal()
            except SecretUnavailable as exc:
                raise SinkError(str(exc)) from None
        return h

    async def post(self, path: str, body: bytes, content_type: str) -> Any:
        try:
            resp = await request("POST", self.url + path, body, self.headers(content_type))
        except HTTPError as exc:
            raise SinkError(str(exc)) from None
        if not 200 <= resp.status < 300:
            raise SinkError(f"{self.name}: HTTP {resp.status}")
        return resp


class ElasticsearchSink(_HTTPSink):
    def __init__(
        self,
        *,
        url: str,
        index: str = "sqlbastion-audit",
        auth_header: SecretRef | None = None,
        name: str = "elasticsearch",
        required: bool = True,
        batch_size: int = 500,
    ) -> None:
        super().__init__(url=url, auth_header=auth_header, name=name, required=required, batch_size=batch_size)
        self.index = index

    async def deliver(self, records: Sequence[SpooledRecord]) -> None:
        resp = await self.post("/_bulk", bulk_body(records, self.index), "application/x-ndjson")
        try:
            result = json.loads(resp.body)
        except ValueError:
            raise SinkError("Elasticsearch answered with something that is not JSON") from None
        if result.get("errors"):
            for item in result.get("items", []):
                outcome: dict[str, Any] = next(iter(item.values()), {}) if isinstance(item, dict) else {}
                status = outcome.get("status", 0)
                if status not in (200, 201, 409):  # 409: that event id is already indexed
                    raise SinkError(f"Elasticsearch rejected an event: status {status}")


class LokiSink(_HTTPSink):
    def __init__(
        self,
        *,
        url: str,
        auth_header: SecretRef | None = None,
        name: str = "loki",
        required: bool = True,
        batch_size: int = 500,
    ) -> None:
        super().__init__(url=url, auth_header=auth_header, name=name, required=required, batch_size=batch_size)

    async def deliver(self, records: Sequence[SpooledRecord]) -> None:
        await self.post("/loki/api/v1/push", loki_body(records), "application/json")
