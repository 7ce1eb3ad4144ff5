"""Signed model updates over MQTT: signing on the workstation, verification, storage and hand-over on the gateway.

``signing`` is what ``frugalsense model keygen|sign|push`` runs on a workstation; the
receiving half (``receiver``) runs inside the gateway service. See docs/model-updates.md.
"""
