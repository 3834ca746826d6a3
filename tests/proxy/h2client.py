"""A raw h2c client for the HTTP/2 tests: sends header fields exactly as given (no
client-side checks) and reports how each stream ended."""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events


class RawH2Client:
    """A raw h2c client that sends header fields as given (no client-side checks)."""

    def __init__(self, reader, writer) -> None:
        self.reader, self.writer = reader, writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
            )
        )
        self.h2.initiate_connection()
        self.bodies: dict[int, bytes] = {}
        self.flush()

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    async def outcome(self, sid: int) -> tuple[str, object]:
        """('reset', code) or ('response', status) for stream `sid`."""
        status = None
        while True:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            assert data, "connection closed"
            for ev in self.h2.receive_data(data):
                if getattr(ev, "stream_id", None) != sid:
                    continue
                if isinstance(ev, h2.events.StreamReset):
                    return "reset", ev.error_code
                if isinstance(ev, h2.events.DataReceived):
                    self.bodies[sid] = self.bodies.get(sid, b"") + ev.data
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, sid)
                if isinstance(ev, h2.events.ResponseReceived):
                    status = dict(ev.headers)[b":status"]
                if isinstance(ev, h2.events.StreamEnded):
                    return "response", status
            self.flush()

    async def closed(self) -> bool:
        """Read until the server closes the connection (True) or 5 s pass (False)."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), 5):
                pass
        except TimeoutError:
            return False
        return True
