"""The real far ends the notifier's tests send to: an aiosmtpd SMTP server and an http.server webhook receiver.

Both listen on free loopback ports and keep what they received. The tests here check that
the Apprise URL forms the notifier's tests (and docs/notify.md) use reach them: ``mailto://``
without ``s`` speaks plain SMTP (no STARTTLS, no login: apprise/plugins/email/base.py sets
``secure_mode = insecure`` when the scheme is not ``mailtos``), ``json://`` POSTs JSON.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import apprise
from aiosmtpd.controller import Controller

from gateway.local_services.process import free_port


class Mailbox:
    """An SMTP server on 127.0.0.1 that stores every message; ``stop()``/``start()`` take it down and up."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.mails: list[email.message.EmailMessage] = []
        self.received_ms: list[int] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.mails.append(message)
            self.received_ms.append(int(time.time() * 1000))
        return "250 Message accepted for delivery"

    def url(self, to: str = "ops@example.org") -> str:
        """The Apprise URL that sends here: plain SMTP, no login (see the module docstring)."""
        return f"mailto://127.0.0.1:{self.port}?from=frugalsense@example.org&to={to}"

    def start(self) -> Mailbox:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def texts(self) -> list[tuple[str, str]]:
        """(subject, plain-text body) of every mail so far."""
        with self._lock:
            mails = list(self.mails)
        return [(str(m["subject"]), m.get_body(preferencelist=("plain",)).get_content()) for m in mails]

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[tuple[str, str]]:
        """The mails once there are at least ``count``; AssertionError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.mails) >= count:
                return self.texts()
            time.sleep(0.05)
        raise AssertionError(f"{len(self.mails)} mails after {timeout_s} s, expected {count}: {self.texts()}")


class Webhook:
    """An HTTP server on 127.0.0.1 that stores the JSON body of every POST (Apprise ``json://``)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                hook.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_apprise_mailto_reaches_the_plain_smtp_mailbox_without_tls():
    box = Mailbox().start()
    try:
        target = apprise.Apprise()
        assert target.add(box.url())
        assert target[0].secure_mode == "insecure"
        assert target.notify(title="Fuite probable – net3-north", body="Débit de fuite estimé : 141,9 L/s")
        [(subject, body)] = box.wait_for(1)
        assert subject == "Fuite probable – net3-north"
        assert body.strip() == "Débit de fuite estimé : 141,9 L/s"
    finally:
        box.stop()


def test_apprise_json_posts_title_and_message_to_the_webhook():
    hook = Webhook()
    try:
        target = apprise.Apprise()
        assert target.add(hook.url())
        assert target.notify(title="Leak", body="at net3-north")
        [body] = hook.bodies
        assert (body["title"], body["message"]) == ("Leak", "at net3-north")
    finally:
        hook.close()


def test_a_mailbox_that_is_down_makes_apprise_answer_false_then_true_once_up():
    box = Mailbox()  # not started: nothing listens on its port
    target = apprise.Apprise()
    assert target.add(box.url())
    assert not target.notify(title="t", body="b")
    box.start()
    try:
        assert target.notify(title="t", body="b")
        assert len(box.wait_for(1)) == 1
    finally:
        box.stop()
