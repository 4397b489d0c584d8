"""Sending mail (the texts live in ``worker.templates``, the digest in ``worker.notices``)."""
from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage

from schemas.datatypes import DATA_TYPES
from .settings import Settings

log = logging.getLogger(__name__)

DATA_TYPE_NAMES = {name: t.noun for name, t in DATA_TYPES.items()}     # "customers" → "customer"


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
