"""The outbox channel: the embedded default, delivering to a local folder.

It writes exactly what a provider would receive, one file per message under
``<outbox>/<campaign>/<channel>/<customer>-<occasion>.<ext>``:

- SMS: ``.txt``, the text as sent (opt-out line included) under a few
  header lines (To, Channel, Key);
- email: ``.eml``, the RFC 5322 message a mailbox would get: text and HTML
  parts, From/To/Subject, and for marketing mail the unsubscribe link and
  RFC 8058 one-click headers (careflow/channels/email_content.py, shared with the
  SendGrid channel); open it in any mail client;
- fax: ``.pdf``, the A4 pages the fax provider would be handed.

Each message is reported as sent with a provider id of
``outbox:<relative path>``. A file is written under a temporary name and
renamed into place, so a message's file is either whole or absent: an error
(or a crash) leaves no empty or partial file under a message's name.

A fault of the folder rather than of one message (no space left, a
read-only file system, no permission, a quota, an I/O error, no file
descriptor left) would fail every message after it: the channel raises
``ChannelDown`` with the outcomes of the messages before it and the one
that hit it (failed, retryable: it was not delivered), and the run stops
there, leaving the rest for the next run.

With ``CAREFLOW_OUTBOX_FILES=false`` every message is still built, byte for byte, and
reported sent with the same provider id, but no file is written: what ``careflow
journey simulate`` runs its days with (a file per message was an eighth of a simulation's
time, writing them and deleting them at the end).

It needs no credentials; unsubscribe links are signed with
CAREFLOW_UNSUBSCRIBE_SECRET or, without one, a key kept in CAREFLOW_HOME
that a local ``careflow serve`` also uses.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from careflow.channels.credentials import unsubscribe_tokens
from careflow.channels.email_content import email_content, mime_message
from careflow.errors import ChannelDown, ConfigError
from careflow.messages import Message, Outcome
from careflow.safe_text import for_header
from careflow.settings import STAND_IN_FROM_EMAIL, Settings
from careflow.unsubscribe import UnsubscribeTokens

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
#: where `careflow serve` listens by default
LOCAL_UNSUBSCRIBE = "http://127.0.0.1:8080/unsubscribe"
EXTENSIONS = {"email": "eml", "fax": "pdf"}
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
#: what the outbox answers once it cannot take any more files: its file system is full,
#: read-only, forbidden or failing, or this process is out of file descriptors
FOLDER_FAULTS = {
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
    errno.EIO, errno.EMFILE, errno.ENFILE,
}  # fmt: skip


class OutboxChannel:
    name: ClassVar[str] = "outbox"
    #: local files, about 30 µs each: marks and records per 1,000, not per 50
    #: (careflow/channels/base.py)
    send_chunk_size: ClassVar[int] = 1000

    def __init__(
        self,
        folder: Path,
        *,
        from_email: str = STAND_IN_FROM_EMAIL,
        from_name: str | None = None,
        reply_to: str | None = None,
        tokens: UnsubscribeTokens | None = None,
        unsubscribe_base: str | None = LOCAL_UNSUBSCRIBE,
        fax_font_path: Path | None = None,
        files: bool = True,
    ):
        self.folder = Path(folder)
        #: False: every message is built (and can fail) as if written, but no file is
        #: written (``CAREFLOW_OUTBOX_FILES``: a simulation's days, whose copy is dropped)
        self.files = files
        self.from_email, self.from_name, self.reply_to = from_email, from_name, reply_to
        self.tokens, self.unsubscribe_base = tokens, unsubscribe_base
        self.fax_font_path = fax_font_path
        self._font = None
        self._made: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboxChannel:
        return cls(
            settings.effective_outbox_dir,
            from_email=settings.from_email,
            from_name=settings.sendgrid_from_name or settings.brand_name,
            reply_to=settings.sendgrid_reply_to,
            tokens=unsubscribe_tokens(settings, local=True),
            unsubscribe_base=settings.unsubscribe_base_url or LOCAL_UNSUBSCRIBE,
            fax_font_path=settings.fax_font_path,
            files=settings.outbox_files,
        )

    def send_batch(self, messages: Sequence[Message]) -> list[Outcome]:
        outcomes = []
        for msg in messages:
            # plain strings, not pathlib: a third of the cost of a message here
            folder = f"{_UNSAFE.sub('_', msg.campaign)}/{_UNSAFE.sub('_', msg.channel)}"
            rel = (
                f"{folder}/{msg.customer_id}-{_UNSAFE.sub('_', msg.occasion)}."
                f"{EXTENSIONS.get(msg.channel, 'txt')}"
            )
            try:
                data = self._content(msg)
            except ConfigError as exc:  # no font for a fax: this message's problem
                outcomes.append(Outcome.failed(msg.contact_id, "fax_font_missing", detail=str(exc)))
                continue
            try:
                if self.files:
                    self._write(folder, rel, data)
            except OSError as exc:
                failed = Outcome.failed(
                    msg.contact_id,
                    "outbox_write_error",
                    retryable=exc.errno in FOLDER_FAULTS,
                    detail=f"{rel}: {exc.strerror or exc}",
                )
                outcomes.append(failed)
                if failed.retryable:
                    raise ChannelDown(
                        "outbox_unwritable",
                        f"cannot write to the outbox {self.folder}: {exc.strerror or exc}",
                        outcomes,
                    ) from None
            else:
                outcomes.append(Outcome.sent(msg.contact_id, provider_id=f"outbox:{rel}"))
        return outcomes

    def _write(self, folder: str, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` whole or not at all: under a temporary name in the
        same folder, renamed into place (atomic), the temporary file removed on error."""
        if folder not in self._made:  # one mkdir per folder, not per message
            (self.folder / folder).mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        path = os.path.join(self.folder, rel)
        temp = f"{path}.{os.getpid()}-{threading.get_ident()}.partial"
        try:
            try:
                fd = os.open(temp, _CREATE, 0o644)
            except FileNotFoundError:  # the folder went away during the run: make it again
                (self.folder / folder).mkdir(parents=True, exist_ok=True)
                fd = os.open(temp, _CREATE, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(temp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def _content(self, msg: Message) -> bytes:
        if msg.channel == "email":
            content = email_content(msg, self.tokens, self.unsubscribe_base)
            return mime_message(
                msg,
                content,
                from_email=self.from_email,
                from_name=self.from_name,
                reply_to=self.reply_to,
            )
        if msg.channel == "fax":
            from careflow.channels.fax import find_cjk_font, render_fax_pdf

            self._font = self._font or find_cjk_font(self.fax_font_path)
            return render_fax_pdf(msg.body, self._font, title=msg.subject)
        head = [f"To: {msg.to}", f"Channel: {msg.channel}", f"Key: {msg.key}"]
        if msg.subject:
            head.append(f"Subject: {for_header(msg.subject)}")
        return ("\n".join(head) + "\n\n" + msg.body.rstrip("\n") + "\n").encode("utf-8")
