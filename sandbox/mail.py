"""An SMTP sink (aiosmtpd) that keeps every message: the demo's and the tests' mailbox."""
from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from .local import free_port


class Mailbox:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None):
        self.messages: list[EmailMessage] = []
        self.port = port or free_port()
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                box.messages.append(message_from_bytes(envelope.content, policy=policy.default))
                return "250 OK"

        self.controller = Controller(Handler(), hostname=host, port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller._thread is not None:     # stopping twice is harmless
            self.controller.stop()
