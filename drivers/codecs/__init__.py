"""Pure frame codecs: bytes or text in, :class:`gateway.kernel.model.Reading` objects out.

No I/O, no clock: timestamps are passed in. Every rejection raises (or, for the stream
splitter, returns) :class:`drivers.DecodeError` with a short ``reason`` and a ``where``
naming the byte offset or field; arbitrary input never raises anything else.

* :mod:`~drivers.codecs.dlt645` — DL/T 645-2007 electricity meters (RS-485).
* :mod:`~drivers.codecs.cjt188` — CJ/T 188-2004 water and gas meters.
* :mod:`~drivers.codecs.framing` — what those two share: frame checks, BCD, and the
  :class:`~drivers.codecs.framing.FrameSplitter` for serial streams.
* :mod:`~drivers.codecs.contact_id` — Ademco Contact ID lines from alarm receivers.
* :mod:`~drivers.codecs.modbus_registers` — Modbus register maps, read planning.

See docs/codecs.md for what each accepts and the sources checked.
"""

__all__ = ["cjt188", "contact_id", "dlt645", "framing", "modbus_registers"]
