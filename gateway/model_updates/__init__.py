"""Signed model updates over MQTT: signing on the workstation, verification, storage and hand-over on the gateway.

``signing`` is what ``frugalsense model keygen|sign|push`` runs on a workstation. The
receiving half runs inside the gateway service:

- ``envelope``: what one update message is, its Ed25519 signature, and ``verify_update``;
- ``store``: the version folders and the ``current.json`` pointer on the gateway's disk;
- ``receiver``: ``ModelUpdateReceiver`` applies a verified update, swaps it in, rolls back, reports;
- ``listener``: topics, ACL lines, status messages, the MQTT listener and ``start_for_config``.

See docs/model-updates.md.
"""
