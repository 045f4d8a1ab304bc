"""Kafka sink via aiokafka: an idempotent producer with ``acks=all``.

Records: key = the session id (so one session's events stay in one partition,
in order; the event id when there is no session), value = the event JSON
(UTF-8), header ``event_id`` for consumers that deduplicate. ``acks="all"``
and ``enable_idempotence=True`` make the broker write each record once per
producer session even when the client retries; a batch is delivered when
every send future has resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from sqlbastion.audit.sinks.base import Sink, SinkError, event_json
from sqlbastion.audit.spool import SpooledRecord

__all__ = ["KafkaSink", "kafka_record"]


def kafka_record(event: dict[str, Any]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) for one event."""
    key = str(event.get("session_id") or event["event_id"]).encode("utf-8")
    return key, event_json(event).encode("utf-8"), [("event_id", str(event["event_id"]).encode("ascii", "replace"))]


class KafkaSink(Sink):
    def __init__(
        self,
        *,
        bootstrap_servers: list[str],
        topic: str = "sqlbastion-audit",
        name: str = "kafka",
        required: bool = True,
        batch_size: int = 500,
    ) -> None:
        super().__init__(name=name, required=required, batch_size=batch_size)
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self._producer: Any = None

    def producer_config(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": ",".join(self.bootstrap_servers),
            "client_id": "sqlbastion-audit",
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            "compression_type": None,
            "request_timeout_ms": 30000,
        }

    async def open(self) -> None:
        if self._producer is not None:
            return
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**self.producer_config())
        try:
            await producer.start()
        except Exception as exc:
            await producer.stop()
            raise SinkError(f"cannot connect to Kafka: {type(exc).__name__}") from None
        self._producer = producer

    async def deliver(self, records: Sequence[SpooledRecord]) -> None:
        await self.open()
        try:
            futures = []
            for r in records:
                key, value, headers = kafka_record(r.event)
                futures.append(await self._producer.send(self.topic, value=value, key=key, headers=headers))
            await asyncio.gather(*futures)
        except Exception as exc:
            raise SinkError(f"Kafka send failed: {type(exc).__name__}") from None

    async def reset(self) -> None:
        await self.close()

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):  # it is being discarded either way
                await producer.stop()
