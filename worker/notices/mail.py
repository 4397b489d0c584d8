"""Building and sending mail (the texts live in ``worker.notices.templates``, the digest in
``worker.notices.digest``)."""
from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from worker.config.settings import Settings

log = logging.getLogger(__name__)

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


def mail_operator(settings, send, subject: str, body: str, about: str) -> None:
    """Email the operator (``MSB1_OPERATOR_EMAIL``, when set) with ``send``; a failure is
    logged ("could not email the operator about ``about``"), never raised."""
    if not settings.operator_email:
        return
    try:
        send(make_email(settings, settings.operator_email, subject, body))
    except Exception as exc:
        log.error("could not email the operator about %s (%s)", about, type(exc).__name__)


def make_email(settings, to: str, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.smtp_sender
    msg["To"] = to
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="moment-sb1")
    msg["Subject"] = " ".join(subject.split())        # never a line break in a header
    msg.set_content(body)
    return msg
