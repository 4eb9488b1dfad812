"""The alarm receiver of a serial line: Contact ID lines printed by an alarm receiver, read
and answered (ACK/NAK).

An exception our own decoding raises on a receiver's event (a bug, not a ``DecodeError``)
costs that event only: counted as ``decode_error``, reported to ``decode_watch`` (the
device's fault ``decode_error``), and the receiver's line is still acknowledged.
"""

from __future__ import annotations

import logging
import string

from drivers import DECODE_ERROR, DecodeError
from drivers.codecs import contact_id
from drivers.serial_line.transport import LineContext, LineLost, Port, SerialDevice
from gateway.kernel.clock import utc

__all__ = ["ContactIdReceiver"]

log = logging.getLogger(__name__)

_REFUSALS = 3        # a receiver line that will not decode is refused this often, then acked


class ContactIdReceiver:
    """Reads the receiver lines of one line over an open port until the port is lost."""

    def __init__(self, line: LineContext):
        self.line = line
        self._rx_seq = 0                      # receiver lines read so far (stale-ACK guard)
        self._refused = (b"", 0)              # the last unreadable line, times refused

    async def run(self, port: Port) -> None:
        by_zone = {(d.address.upper(), d.zone): d for d in self.line.devices}
        buf = bytearray()
        while True:
            chunk = await port.read(3600.0)
            if not chunk:
                continue
            buf += chunk
            if len(buf) > 4096:                 # no line end in 4 KiB: not a receiver
                self.line.reject(DecodeError("oversize", "4096 bytes without a line end",
                                             where="receiver line"), None)
                buf.clear()
            *lines, rest = bytes(buf).replace(b"\r", b"\n").split(b"\n")
            buf = bytearray(rest)
            for raw in lines:
                if raw.strip():
                    self._receiver_line(raw, by_zone, port)

    def _receiver_line(self, raw: bytes, by_zone: dict[tuple[str, int | None], SerialDevice],
                       port: Port) -> None:
        """Decode one receiver line and answer it (when the line has ``ack``/``nak``).

        - An event of a known account is acknowledged only once the pipeline has it in its
          inbox (every event, not only alarm-class ones), and only if no newer line has come
          since: an ACK carries no sequence number, so an ACK for a copy the receiver has
          already resent would be taken as the answer to the resend (or to the next event).
        - A line that does not decode but has the digits of an event (12 or more hex digits:
          a bad checksum, a lost or garbled character) is refused — ``nak``, or silence — so
          the receiver sends it again; the same line refused ``_REFUSALS`` times running is
          acknowledged and logged as an error (``unreadable_gave_up``), so one bad stored
          event cannot block the receiver.
        - Anything else (a status line such as a receiver's heartbeat, an unknown account or
          event code) is acknowledged at once: sending it again would not make it usable; it
          is counted (unknown accounts are shown to installers)."""
        line = self.line
        settings = line.settings
        self._rx_seq += 1
        try:
            event = contact_id.parse_line(raw)
        except DecodeError as exc:
            line.reject(exc, None)
            if sum(chr(b) in string.hexdigits for b in raw) < 12:
                self._answer(port, settings.ack)   # a status line (heartbeat), not an event
                return
            last, times = self._refused
            times = times + 1 if raw == last else 1
            if times > _REFUSALS:
                self._refused = (b"", 0)
                line.metrics.inc("gateway_rejected_total", reason="unreadable_gave_up",
                                 transport="serial")
                log.error("line %s: receiver line %r refused %d times; acknowledged so that "
                          "the receiver goes on (the event in it is lost)", line.line_id,
                          raw[:80], _REFUSALS)
                self._answer(port, settings.ack)
            else:
                self._refused = (raw, times)
                self._answer(port, settings.nak)
            return
        except Exception as exc:  # noqa: BLE001 - a bug of ours: counted, logged, acknowledged
            # no account known yet, so no device to put in fault: resending would not help
            line.metrics.inc("gateway_rejected_total", reason=DECODE_ERROR, transport="serial")
            line.rlog.error((DECODE_ERROR, line.line_id), "line %s: cannot decode receiver "
                            "line %r: %s: %s (acknowledged: the event in it is lost)",
                            line.line_id, raw[:80], type(exc).__name__, exc)
            self._answer(port, settings.ack)
            return
        self._refused = (b"", 0)
        dev = by_zone.get((event.account, event.zone)) or by_zone.get((event.account, None))
        if dev is None:
            line.metrics.inc("gateway_rejected_total", reason="unknown_device",
                             transport="serial")
            line.on_unknown(f"contact-id:{event.source}",
                            raw.decode("ascii", "replace").strip())
            self._answer(port, settings.ack)
            return
        try:
            reading = contact_id.event_reading(event, device_id=dev.device_id, ts=utc())
        except DecodeError as exc:
            line.reject(exc, dev.device_id)
            self._answer(port, settings.ack)
            return
        except Exception as exc:  # noqa: BLE001 - a bug of ours: fault, counted, acknowledged
            line.undecodable(dev, exc, f"account {event.account} zone {event.zone} "
                             f"line {raw[:80]!r}")
            self._answer(port, settings.ack)
            return
        line.decode_watch.ok(dev.device_id)
        line.metrics.inc("gateway_ingest_messages_total", transport="serial")
        ack = None
        if settings.ack:
            seq = self._rx_seq

            def ack() -> None:
                if seq == self._rx_seq:      # else a newer line (or a resend) is pending
                    self._answer(port, settings.ack)

        line.offer(dev, [reading], ack, durable=True)

    def _answer(self, port: Port, data: bytes) -> None:
        """Send an ACK/NAK to the receiver; a lost line only costs the receiver a resend."""
        if not data:
            return
        try:
            port.write(data)
        except LineLost as exc:
            line = self.line
            line.rlog.warning(("answer", line.line_id), "line %s: could not answer the "
                              "receiver (%s); it will send the event again", line.line_id, exc)
