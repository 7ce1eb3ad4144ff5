"""`frugalsense notify`: gateway alerts to people, through Apprise (e-mail, ntfy, SMS gateways, webhooks...).

The modules, in the order a message flows through them:

- ``config``: the routing rules file (``notify.yaml``), validated with ``FILE:LINE`` and did-you-mean;
- ``routes``: which routes take an alert, quiet hours, and each route's Apprise channels (secrets filled);
- ``lifecycle``: what a raise, a clear, an operator's command or the passing of time puts in the outbox;
- ``state``: the SQLite file (alerts seen, the outbox with one unique key per notification, counters);
- ``delivery``: sends due groups, retries with backoff, dead-letters;
- ``messages``: the words, in English and French;
- ``service``: the MQTT side (manual acknowledgement after the commit) and the worker thread.

docs/notify.md says how to run it and what it guarantees.
"""

from gateway.notify.config import NotifyRules, Route, load_rules
from gateway.notify.lifecycle import Lifecycle
from gateway.notify.routes import Routing, build_routing
from gateway.notify.service import Notifier
from gateway.notify.state import State

__all__ = ["Lifecycle", "Notifier", "NotifyRules", "Route", "Routing", "State", "build_routing", "load_rules"]
