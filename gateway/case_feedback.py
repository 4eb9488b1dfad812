"""Case status coming back from the grid case system (signed callbacks).

Callbacks are delivered at least once; ``event_id`` deduplicates them. Each accepted status
change is stored on the alarm (``case_status``) and in its history, and pushed to the console.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Mapping

from fastapi import HTTPException
from pydantic import ValidationError

from gateway.alarms import Change
from gateway.model import utc
from gateway.store import Store
from gateway.uplink.case_system import decode_callback
from gateway.uplink.signing import Secret, SignatureError, Verifier

__all__ = ["CaseFeedback"]

log = logging.getLogger(__name__)


class CaseFeedback:
    def __init__(self, store: Store, key_id: str, secret: str,
                 on_change: Callable[[list[Change]], None]):
        self.store = store
        self.verifier = Verifier({key_id: Secret(secret)})
        self.on_change = on_change

    async def handle(self, method: str, target: str, headers: Mapping[str, str],
                     body: bytes) -> dict:
        try:
            cb = decode_callback(self.verifier, method=method, target=target,
                                 headers=headers, body=body)
        except SignatureError as exc:
            raise HTTPException(401, f"signature: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise HTTPException(422, f"{field}: {first['msg']}") from None

        def tx(conn: sqlite3.Connection) -> int | None:
            cur = conn.execute("INSERT OR IGNORE INTO case_callbacks VALUES (?, ?)",
                               (cb.event_id, utc().isoformat()))
            if cur.rowcount == 0:
                return None     # duplicate delivery
            row = conn.execute("SELECT id FROM alarms WHERE case_id=?", (cb.case_id,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE alarms SET case_status=? WHERE id=?", (cb.status.value, row[0]))
            conn.execute("INSERT INTO alarm_events (alarm_id, ts, action, actor, detail) "
                         "VALUES (?,?,?,?,?)",
                         (row[0], utc().isoformat(), "case_status",
                          f"case_system:{cb.handler or ''}",
                          json.dumps({"status": cb.status.value, "note": cb.note,
                                      "event_id": cb.event_id}, ensure_ascii=False)))
            return row[0]

        alarm_id = await self.store.write(tx)
        if alarm_id is not None:
            self.on_change([Change(alarm_id, "case_status")])
            return {"ok": True, "duplicate": False}
        return {"ok": True, "duplicate": True}
