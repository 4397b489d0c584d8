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


def smtp_session(settings: Settings, timeout: float = 30) -> smtplib.SMTP:
    """A connection to the configured SMTP server (plain, STARTTLS or TLS), logged in when
    a user is set. Use it as a context manager."""
    if settings.smtp_tls == "ssl":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=timeout,
                                              context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    try:
        if settings.smtp_tls == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password or "")
    except BaseException:
        smtp.close()
        raise
    return smtp


def send_email(settings: Settings, msg: EmailMessage) -> None:
    """Send one message with the configured SMTP server."""
    with smtp_session(settings) as smtp:
        smtp.send_message(msg)
