"""The gateway service, the process ``frugalsense run`` starts on a gateway (and its systemd unit).

Sources -> detectors -> outbox -> MQTT: ``runner`` builds it from a gateway config,
``source_merge`` reads live sources in their own threads, ``publisher`` batches and
publishes through the durable ``outbox``, ``ha_discovery`` announces the gateway to
Home Assistant. It imports neither the bridge nor the tools.
"""
