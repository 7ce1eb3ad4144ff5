"""The MQTT protocol every frugalsense process speaks: the topic tree, the payloads and the one MQTT client factory.

Used by the gateway service (``gateway.device``), the bridge (``gateway.bridge``), the
model-update tools and the technician tools alike; it imports none of them.
"""
