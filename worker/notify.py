"""The failure email to a company's notification address: plain words, no secrets."""
from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from .integrations import Integration
from .settings import Settings

log = logging.getLogger(__name__)

DATA_TYPE_NAMES = {"customers": "customer", "projects": "project", "invoices": "invoice"}


def failure_email(integration: Integration, *, subject_what: str, what: str, error: str,
                  todo: str, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = integration.notify_email
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="moment-sb1")
    msg["Subject"] = f"Moment → SpareBank 1 Regnskap: {subject_what} was not transferred"
    msg.set_content(
        f"Hello,\n\n"
        f"The integration between Moment and SpareBank 1 Regnskap (Moment company "
        f"\"{integration.moment_company}\") could not transfer {what}.\n\n"
        f"What went wrong:\n  {error}\n\n"
        f"What to do:\n  {todo}\n\n"
        f"Nothing else is held up: other records keep being transferred. This record is kept "
        f"and will be transferred again the next time it changes in Moment, or when your "
        f"operator replays it (moment-sb1 replay --integration {integration.id}).\n\n"
        f"This message was sent by the Moment → SpareBank 1 Regnskap integration.\n")
    return msg


def send_email(settings: Settings, msg: EmailMessage) -> None:
    """Send one message with the configured SMTP server (plain, STARTTLS or TLS)."""
    timeout = 30
    if settings.smtp_tls == "ssl":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=timeout,
                                              context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    with smtp:
        if settings.smtp_tls == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password or "")
        smtp.send_message(msg)
