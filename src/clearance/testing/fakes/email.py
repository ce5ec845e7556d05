"""A local mailbox: an SMTP server (aiosmtpd) that keeps every message it is given, for demos
and tests of the email channel.

    box = FakeMailbox()
    box.start()                        # SMTP on 127.0.0.1:<box.port>, no TLS, no AUTH
    ...
    box.mails[0].text, box.mails[0].links()   # the plain-text part, the links in it
    box.stop()
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller

_LINK = re.compile(r"https?://[^\s<>\"']+")


@dataclass(frozen=True, slots=True)
class Mail:
    """One message as the server received it."""

    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message.get("subject", ""))

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return str(part.get_content()) if part is not None else ""

    def links(self) -> list[str]:
        """Every link of the plain-text part, in order."""
        return _LINK.findall(self.text)


class _Handler:
    def __init__(self, box: FakeMailbox) -> None:
        self.box = box

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        mail = Mail(str(envelope.mail_from), tuple(envelope.rcpt_tos), message)
        with self.box.lock:
            self.box.mails.append(mail)
        return "250 Message accepted for delivery"


class FakeMailbox:
    """SMTP on a free local port (or `port`); every accepted message lands in `mails`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.mails: list[Mail] = []
        self.lock = threading.Lock()
        self._controller: Controller | None = None

    def start(self) -> None:
        if self.port == 0:
            with socket.socket() as sock:
                sock.bind((self.host, 0))
                self.port = int(sock.getsockname()[1])
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
