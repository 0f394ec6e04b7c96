"""Mail to people about their own account: the link that confirms a registration, or the note
that an address already has an account.

With ``SMTP_HOST`` set it goes through that server (the same settings as budget alerts, from
``SMTP_FROM`` or ``accounts@`` the host). Without it (the embedded default) the message is
written to the application's log, where the operator of a development installation reads the
link. A test swaps in an ``Outbox``.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Mapping, Protocol

TIMEOUT_SECONDS = 10
log = logging.getLogger("market.mail")


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


class Mailer(Protocol):
    def send(self, mail: Mail) -> None: ...


@dataclass(frozen=True)
class SmtpMailer:
    host: str
    port: int
    sender: str
    username: str = ""
    password: str = ""
    starttls: bool = False

    def send(self, mail: Mail) -> None:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, mail.to, mail.subject
        message.set_content(mail.body)
        send_smtp(message, host=self.host, port=self.port, username=self.username,
                  password=self.password, starttls=self.starttls)


def send_smtp(message: EmailMessage, *, host: str, port: int, username: str = "",
              password: str = "", starttls: bool = False) -> None:
    """Hand one message to the mail server (STARTTLS and login when configured); the one
    place the marketplace speaks SMTP, for account mail and budget alerts alike."""
    with smtplib.SMTP(host, port, timeout=TIMEOUT_SECONDS) as client:
        if starttls:
            client.starttls()
        if username:
            client.login(username, password)
        client.send_message(message)


class LogMailer:
    def send(self, mail: Mail) -> None:
        log.warning("no SMTP_HOST: mail to %s, %r:\n%s", mail.to, mail.subject, mail.body)


class Outbox:
    """Keeps what was sent, in order."""

    def __init__(self) -> None:
        self.sent: list[Mail] = []

    def send(self, mail: Mail) -> None:
        self.sent.append(mail)


def mailer_from_settings(settings: Mapping[str, Any]) -> Mailer:
    host = settings.get("SMTP_HOST") or ""
    if not host:
        return LogMailer()
    return SmtpMailer(host=host, port=int(settings.get("SMTP_PORT") or 25),
                      sender=settings.get("SMTP_FROM") or f"accounts@{host}",
                      username=settings.get("SMTP_USERNAME") or "",
                      password=settings.get("SMTP_PASSWORD") or "",
                      starttls=bool(settings.get("SMTP_STARTTLS")))
