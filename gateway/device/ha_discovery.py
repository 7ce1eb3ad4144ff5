"""Home Assistant MQTT discovery: retained config messages so a gateway's sensors, detections and status appear there.

Enabled per gateway in its config (``homeassistant: {enabled: true, prefix: homeassistant}``).
The messages point Home Assistant at the gateway's own topics (docs/contracts.md); nothing
is published twice. Topics are ``<prefix>/<component>/<node_id>/<object_id>/config`` with
the gateway id as node id, retained so Home Assistant finds them after its own restart.

Each model type says which entities its detection kind gets (``ModelBase.ha_entities``,
``gateway/config/schema/ha_entities.py``); this module adds what every entity shares.

Readings travel in batches (up to ``mqtt.readings_batch`` per message, at most 10 s
old): Home Assistant shows the latest reading of each batch. An ``unknown`` reading
(value null) renders "None", which Home Assistant shows as unknown, never as the last
value.

>>> from gateway.config import load_config_text
>>> cfg = load_config_text('''
... site: dma-7
... gateway: gw-1
... sensors: [{id: F-inlet, quantity: flow, driver: replay}]
... sources: {replay: {file: zone.npz}}
... models: [{name: mnf-leak, type: mnf, zone_inflow: [{sensor: F-inlet}]}]
... mqtt: {host: localhost}
... homeassistant: {enabled: true}
... ''')
>>> [topic for topic, _ in discovery_messages(cfg)]  # doctest: +NORMALIZE_WHITESPACE
['homeassistant/binary_sensor/gw-1/gateway/config', 'homeassistant/sensor/gw-1/outbox_backlog/config',
 'homeassistant/sensor/gw-1/F-inlet/config', 'homeassistant/binary_sensor/gw-1/leak/config',
 'homeassistant/sensor/gw-1/leak_excess_flow/config']
"""

from __future__ import annotations

import json
import logging

from edge.contracts import QUANTITY_UNITS
from gateway.config import GatewayConfig, ModelBase
from gateway.config.schema.ha_entities import object_id as _object_id
from gateway.protocol import topics as T

log = logging.getLogger(__name__)

ORIGIN = {"name": "frugalsense"}
# quantity -> (Home Assistant device_class or None, unit as Home Assistant spells it).
# Pressure head in metres and flow in L/s are not units of HA's pressure / volume_flow_rate
# classes, so those sensors carry the unit without a class (HA then just plots numbers).
HA_QUANTITIES: dict[str, tuple[str | None, str]] = {
    "pressure": (None, "m"),
    "flow": (None, "L/s"),
    "pm1": ("pm1", "µg/m³"),
    "pm25": ("pm25", "µg/m³"),
    "pm10": ("pm10", "µg/m³"),
    "pm25_corrected": ("pm25", "µg/m³"),
    "no2": ("nitrogen_dioxide", "µg/m³"),
    "o3": ("ozone", "µg/m³"),
    "temperature": ("temperature", "°C"),
    "humidity": ("humidity", "%"),
    "cell_count": (None, "count"),
    "pm25_calibrated": ("pm25", "µg/m³"),
    "no2_calibrated": ("nitrogen_dioxide", "µg/m³"),
    "resistance": (None, "Ω"),
    "voltage": ("voltage", "V"),
}


def discovery_messages(config: GatewayConfig) -> list[tuple[str, bytes]]:
    """``(topic, JSON payload)`` of every discovery config for this gateway (empty if disabled)."""
    if not config.homeassistant.enabled:
        return []
    prefix = config.homeassistant.prefix
    topics = T.Topics(config.mqtt.topic_prefix, config.site, config.gateway)
    node = _object_id(config.gateway)
    uid = f"frugalsense_{_object_id(config.site)}_{node}"
    device = {
        "identifiers": [uid],
        "name": f"frugalsense {config.gateway}",
        "manufacturer": "frugalsense",
        "model": "edge gateway",
        "suggested_area": config.site,
    }
    availability = [
        {
            "topic": topics.status,
            "value_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        }
    ]
    out: list[tuple[str, dict]] = []

    def add(component: str, object_id: str, body: dict, available: bool = True) -> None:
        body = {"unique_id": f"{uid}_{object_id}", "device": device, "origin": ORIGIN, **body}
        if available:
            body["availability"] = availability
        out.append((f"{prefix}/{component}/{node}/{object_id}/config", body))

    # The gateway itself: its retained status says online/offline (the will), so it needs no availability.
    add(
        "binary_sensor",
        "gateway",
        {
            "name": "Gateway",
            "device_class": "connectivity",
            "state_topic": topics.status,
            "value_template": "{{ 'ON' if value_json.state == 'online' else 'OFF' }}",
            "json_attributes_topic": topics.status,
            "json_attributes_template": "{{ (value_json.counters or {}) | tojson }}",
        },
        available=False,
    )
    add(
        "sensor",
        "outbox_backlog",
        {
            "name": "Outbox backlog",
            "state_topic": topics.status,
            "unit_of_measurement": "messages",
            "state_class": "measurement",
            "entity_category": "diagnostic",
            "value_template": "{{ (value_json.counters or {}).get('outbox_backlog', 'None') }}",
        },
        available=False,
    )

    # The config's sensors, then the virtual ones a model publishes readings for (a calibration's).
    sensors = [(s.id, s.quantity, s.unit) for s in config.sensors]
    for model in config.models:
        published = getattr(model, "published_sensors", None)
        sensors += [(sid, q, QUANTITY_UNITS[q]) for sid, q in (published() if published else [])]
    for sensor_id, quantity, sensor_unit in sensors:
        device_class, unit = HA_QUANTITIES.get(quantity, (None, sensor_unit))
        body = {
            "name": f"{sensor_id} {quantity}",
            "state_topic": topics.readings(sensor_id),
            "value_template": "{{ value_json.readings[-1][1] }}",
            "unit_of_measurement": unit,
            "state_class": "measurement",
        }
        if device_class:
            body["device_class"] = device_class
        add("sensor", _object_id(sensor_id), body)

    # One set of entities per detection kind, told by the model type that detects it (mnf and learned_leak
    # announce the same leak entities: Home Assistant sees one leak, whichever detector decides it).
    kinds: dict[str, type[ModelBase]] = {}
    for model in config.models:
        kinds.setdefault(model.detection_kind, type(model))
    for kind in sorted(kinds):
        for component, object_id, body in kinds[kind].ha_entities(topics.detections(kind)):
            add(component, object_id, body)
    return [(topic, json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()) for topic, body in out]


def announce_on_connect(publisher, config: GatewayConfig) -> None:
    """Publish the discovery messages (retained, QoS 1) each time ``publisher`` connects, if enabled.

    On every connection, not once: a broker that lost its retained store (no persistence)
    gets them back with the gateway's next connection.
    """
    messages = discovery_messages(config)
    if not messages:
        return
    previous = publisher.client.on_connect

    def on_connect(client, userdata, flags, reason_code, properties):
        previous(client, userdata, flags, reason_code, properties)
        if reason_code.is_failure:
            return
        for topic, payload in messages:
            client.publish(topic, payload, qos=1, retain=True)
        log.info("Home Assistant discovery: %d entities under %s/", len(messages), config.homeassistant.prefix)

    publisher.client.on_connect = on_connect
