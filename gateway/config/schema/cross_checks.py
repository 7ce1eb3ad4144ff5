"""Checks that span sections (duplicate ids, a model naming a sensor, one port one device), all reported at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from edge.air.eaqi import POLLUTANT_OF_QUANTITY
from edge.contracts import QUANTITY_UNITS
from gateway.config.schema.air_sensors import LineSensor, Pms5003Sensor, Sds011Sensor
from gateway.config.schema.calibration_model import CALIBRATED, CalibrationModel
from gateway.config.schema.models import _AIR_INPUTS
from gateway.config.schema.sensors import SENSOR_DRIVERS, ModbusRtuSensor
from gateway.config.schema.types import describe, format_path, suggest


class CrossIssue(NamedTuple):
    """One problem across sections: where it is, what is wrong, the likely intended name."""

    loc: tuple[str | int, ...]
    message: str
    suggestion: str | None = None


def _entries(data: dict, key: str) -> list[tuple[int, dict]]:
    items = data.get(key)
    return [(i, item) for i, item in enumerate(items) if isinstance(item, dict)] if isinstance(items, list) else []


def _duplicates(data: dict, section: str, key: str, what: str, where: Callable[[tuple], str]) -> list[CrossIssue]:
    issues, first = [], {}
    for i, item in _entries(data, section):
        value = item.get(key)
        if not isinstance(value, str):
            continue
        if value in first:
            issues.append(CrossIssue((section, i, key), f"{what} {value!r} is already used ({where(first[value])})"))
        else:
            first[value] = (section, i, key)
    return issues


# Settings every sensor on one serial port must agree on: they share one line.
_LINE_KEYS = ("baudrate", "bytesize", "parity", "stopbits", "timeout_s", "poll_s")


def _shared_line_issues(data: dict, where: Callable[[tuple], str]) -> list[CrossIssue]:
    issues, first = [], {}
    for i, item in _entries(data, "sensors"):
        if item.get("driver") != "modbus_rtu" or not isinstance(item.get("port"), str):
            continue
        port = item["port"]
        if port not in first:
            first[port] = (i, item)
            continue
        j, other = first[port]
        defaults = ModbusRtuSensor.model_fields
        for key in _LINE_KEYS:
            mine, theirs = item.get(key, defaults[key].default), other.get(key, defaults[key].default)
            if mine != theirs:
                issues.append(
                    CrossIssue(
                        ("sensors", i, key if key in item else "port"),
                        f"{key} {describe(mine)} differs from {describe(theirs)} of the sensor on the "
                        f"same port ({where(('sensors', j, 'port'))}): one line has one setting",
                    )
                )
    return issues


# Settings every entry of one air sensor device must agree on: they are one device.
_AIR_SERIAL = {"sds011": Sds011Sensor, "pms5003": Pms5003Sensor, "line": LineSensor}
_AIR_DEVICE_KEYS = ("driver", "baudrate", "interval_s", "work_s", "sleep_s", "warmup_s")


def _device_setting(item: dict, key: str) -> object:
    cls = _AIR_SERIAL.get(item.get("driver"))
    if key in item or cls is None:
        return item.get(key)
    field = cls.model_fields.get(key)
    return field.default if field is not None else None


def _air_issues(data: dict, sensors: dict[str, dict], where: Callable[[tuple], str]) -> list[CrossIssue]:
    issues, first = [], {}
    modbus_ports = {item.get("port") for _, item in _entries(data, "sensors") if item.get("driver") == "modbus_rtu"}
    for i, item in _entries(data, "sensors"):
        driver, port = item.get("driver"), item.get("port")
        if driver not in _AIR_SERIAL or not isinstance(port, str):
            continue
        if port in modbus_ports:
            issues.append(
                CrossIssue(("sensors", i, "port"), f"port {port} is also a Modbus line: one port, one device")
            )
        if port not in first:
            first[port] = (i, item)
        else:
            j, other = first[port]
            for key in _AIR_DEVICE_KEYS:
                mine, theirs = _device_setting(item, key), _device_setting(other, key)
                if mine != theirs:  # a different driver makes every other setting differ too: say it once
                    issues.append(
                        CrossIssue(
                            ("sensors", i, key if key in item else "port"),
                            f"{key} {describe(mine)} differs from {describe(theirs)} of the sensor on "
                            f"the same port ({where(('sensors', j, 'port'))}): one port is one device",
                        )
                    )
                    if key == "driver":
                        break
        humidity = item.get("humidity_sensor")
        if isinstance(humidity, str):
            loc = ("sensors", i, "humidity_sensor")
            target = sensors.get(humidity)
            if target is None:
                issues.append(CrossIssue(loc, f"no sensor with id {humidity!r} in sensors", suggest(humidity, sensors)))
            elif target.get("quantity") != "humidity" or target.get("driver") != "line":
                issues.append(
                    CrossIssue(
                        loc,
                        f"sensor {humidity!r} is not a humidity sensor of a line node "
                        "(driver: line, quantity: humidity)",
                    )
                )
    readable = {**virtual_sensors(data), **sensors}  # a calibration's virtual sensor is a pollutant sensor too
    for m, model in _entries(data, "models"):
        if model.get("type") != "eaqi" or not isinstance(model.get("sensors"), list):
            continue
        for s, name in enumerate(model["sensors"]):
            if not isinstance(name, str):
                continue
            loc = ("models", m, "sensors", s)
            if name not in readable:
                issues.append(CrossIssue(loc, f"no sensor with id {name!r} in sensors", suggest(name, readable)))
            elif (
                quantity := readable[name].get("quantity")
            ) in QUANTITY_UNITS and quantity not in POLLUTANT_OF_QUANTITY:
                issues.append(
                    CrossIssue(
                        loc, f"sensor {name!r} measures {quantity}; the EAQI covers {', '.join(POLLUTANT_OF_QUANTITY)}"
                    )
                )
    return issues


def _air_model_issues(data: dict, sensors: dict[str, dict]) -> list[CrossIssue]:
    """Air-model inputs name existing sensors of the right quantity; so do a drift test's sensor and reference."""
    issues = []
    models = {item.get("name"): item for _, item in _entries(data, "models") if isinstance(item.get("name"), str)}

    def check(loc, name, quantity):
        if name not in sensors:
            issues.append(CrossIssue(loc, f"no sensor with id {name!r} in sensors", suggest(name, sensors)))
        elif (got := sensors[name].get("quantity")) in QUANTITY_UNITS and got != quantity:
            issues.append(CrossIssue(loc, f"sensor {name!r} measures {got}; this input needs {quantity}"))

    for m, model in _entries(data, "models"):
        kind = model.get("type")
        if kind in ("air_pattern", "sensor_fault", "no2_virtual") and isinstance(model.get("sensors"), dict):
            for role, name in model["sensors"].items():
                if role in _AIR_INPUTS and isinstance(name, str):
                    check(("models", m, "sensors", role), name, role)
        if kind == "calibration" and isinstance(model.get("inputs"), dict):
            for role, name in model["inputs"].items():
                if isinstance(name, str) and name not in sensors:
                    check(("models", m, "inputs", role), name, None)
            drift = model.get("drift_model")
            if isinstance(drift, str) and (models.get(drift) or {}).get("type") != "calibration_drift":
                issues.append(
                    CrossIssue(
                        ("models", m, "drift_model"),
                        f"no model of type calibration_drift named {drift!r} in models",
                        suggest(drift, [n for n, x in models.items() if x.get("type") == "calibration_drift"]),
                    )
                )
        if kind == "calibration_drift" and isinstance(model.get("sensor"), str):
            issues += _drift_issues(m, model, sensors, models, virtual_sensors(data))
    return issues


def virtual_sensors(data: dict) -> dict[str, dict]:
    """The calibration models' virtual sensors, as sensor entries (id, quantity): they publish readings like one."""
    default = CalibrationModel.model_fields["quantity"].default
    return {
        item["name"]: {"id": item["name"], "quantity": item.get("quantity", default), "calibration": item}
        for _, item in _entries(data, "models")
        if item.get("type") == "calibration" and isinstance(item.get("name"), str)
    }


def _drift_issues(m: int, model: dict, sensors: dict, models: dict, virtual: dict) -> list[CrossIssue]:
    """A drift test's sensor (measured or a calibration's virtual one), its reference and estimate of that quantity."""
    issues, sensor, loc = [], model["sensor"], ("models", m)
    watched = sensors.get(sensor) or virtual.get(sensor)
    if watched is None:
        known = {**sensors, **virtual}
        return [CrossIssue((*loc, "sensor"), f"no sensor with id {sensor!r} in sensors", suggest(sensor, known))]
    quantity = watched.get("quantity")
    raw = CALIBRATED.get(quantity, quantity)  # a calibrated sensor is compared with the raw quantity it estimates
    what = f"sensor {sensor!r} ({quantity}" + (f", calibrated {raw})" if raw != quantity else ")")
    reference = model.get("reference")
    if isinstance(reference, str) and quantity in QUANTITY_UNITS:
        if reference in virtual:
            issues.append(
                CrossIssue(
                    (*loc, "reference"),
                    f"{reference!r} is a calibration's virtual sensor; the reference of {what} must be a "
                    f"co-located reference sensor measuring {raw}",
                )
            )
        elif reference not in sensors:
            issues.append(
                CrossIssue(
                    (*loc, "reference"), f"no sensor with id {reference!r} in sensors", suggest(reference, sensors)
                )
            )
        elif (got := sensors[reference].get("quantity")) in QUANTITY_UNITS and got != raw:
            issues.append(
                CrossIssue(
                    (*loc, "reference"),
                    f"sensor {reference!r} measures {got}; the reference of {what} must measure {raw}",
                )
            )
    estimate = model.get("estimate_from")
    if isinstance(estimate, str):
        if (models.get(estimate) or {}).get("type") != "no2_virtual":
            issues.append(
                CrossIssue(
                    (*loc, "estimate_from"),
                    f"no model of type no2_virtual named {estimate!r} in models",
                    suggest(estimate, [n for n, x in models.items() if x.get("type") == "no2_virtual"]),
                )
            )
        elif raw in QUANTITY_UNITS and raw != "no2":
            issues.append(
                CrossIssue((*loc, "estimate_from"), f"model {estimate!r} estimates no2; {what} is not an NO2 sensor")
            )
    return issues


def _own_drift_issues(data: dict, virtual: dict) -> list[CrossIssue]:
    """A calibration's drift copy sees the raw readings and its own output: it cannot watch another's output."""
    issues = []
    drifts = {x.get("name"): x for _, x in _entries(data, "models") if x.get("type") == "calibration_drift"}
    for m, model in _entries(data, "models"):
        watched = (
            (drifts.get(model.get("drift_model")) or {}).get("sensor") if model.get("type") == "calibration" else None
        )
        if isinstance(watched, str) and watched in virtual and watched != model.get("name"):
            issues.append(
                CrossIssue(
                    ("models", m, "drift_model"),
                    f"{model['drift_model']!r} watches {watched!r}, the output of another calibration; this "
                    f"calibration's copy of it would never see those readings: name a drift model watching "
                    f"{model.get('name')!r} or one of its raw inputs",
                )
            )
    return issues


# A sensor is said silent only after at least this many of its longest quiet times: one late reading is not silence.
QUIET_TIMES = 2


def _silence_issues(data: dict, where: Callable[[tuple], str]) -> list[CrossIssue]:
    """A ``silent_after_min`` (the sensor's, else ``alerts``') that would call a working sensor silent."""
    alerts = data.get("alerts")
    default = alerts.get("silent_after_min") if isinstance(alerts, dict) else None
    issues = []
    for i, item in _entries(data, "sensors"):
        own = item.get("silent_after_min")
        minutes, loc = (own, ("sensors", i, "silent_after_min")) if own is not None else (default, None)
        cls = SENSOR_DRIVERS.get(item.get("driver"))  # type: ignore[arg-type]  # None: not a driver, skipped
        if not _is_number(minutes) or not minutes or cls is None:
            continue
        settings = {k: item.get(k, f.default) for k, f in cls.model_fields.items()}
        try:
            quiet = cls.quiet_s(settings)
        except (KeyError, TypeError):  # a malformed setting: its own check reports it
            continue
        if quiet is None or minutes * 60 > QUIET_TIMES * quiet:
            continue
        needed = int(QUIET_TIMES * quiet // 60) + 1  # whole minutes, more than QUIET_TIMES quiet times
        message = (
            f"{minutes:g} min is too short for sensor {item.get('id')!r}: it may go {quiet:g} s without a reading "
            f"when it works (its interval, poll or sleep), so it would be said silent; use at least {needed}"
        )
        if loc is None:
            loc = ("alerts", "silent_after_min")
            message += f", or give that sensor its own silent_after_min ({where(('sensors', i))})"
        issues.append(CrossIssue(loc, message))
    return issues


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def cross_section_issues(data: dict, where: Callable[[tuple], str] = format_path) -> list[CrossIssue]:
    """Checks that span sections, on plain (possibly invalid) config data.

    Parts that are malformed are skipped: their own checks already report them.
    ``where(loc)`` says where another key is, e.g. ``"line 12"``.
    """
    issues = _duplicates(data, "sensors", "id", "sensor id", where)
    issues += _duplicates(data, "models", "name", "model name", where)
    sensors: dict[str, dict] = {}
    for _, item in _entries(data, "sensors"):
        if isinstance(item.get("id"), str):
            sensors.setdefault(item["id"], item)  # a duplicate is reported above; the first one counts

    sources = data.get("sources")
    replay_users = [i for i, item in _entries(data, "sensors") if item.get("driver") == "replay"]
    if replay_users and not (isinstance(sources, dict) and sources.get("replay")):
        more = f" (the first of {len(replay_users)} replay sensors)" if len(replay_users) > 1 else ""
        issues.append(
            CrossIssue(
                ("sensors", replay_users[0], "driver"),
                f"driver 'replay' needs a sources.replay section with the dataset file, and there is none{more}",
            )
        )

    issues += _shared_line_issues(data, where)
    issues += _air_issues(data, sensors, where)
    issues += _air_model_issues(data, sensors)
    issues += _own_drift_issues(data, virtual_sensors(data))
    issues += _silence_issues(data, where)

    for m, model in _entries(data, "models"):
        for t, term in _entries(model, "inputs"):  # a learned leak model's sensor -> element mapping
            name = term.get("sensor")
            if isinstance(name, str) and name not in sensors:
                loc = ("models", m, "inputs", t, "sensor")
                issues.append(CrossIssue(loc, f"no sensor with id {name!r} in sensors", suggest(name, sensors)))
        seen: set[str] = set()
        for t, term in _entries(model, "zone_inflow"):
            name = term.get("sensor")
            if not isinstance(name, str):
                continue
            loc = ("models", m, "zone_inflow", t, "sensor")
            if name not in sensors:
                issues.append(CrossIssue(loc, f"no sensor with id {name!r} in sensors", suggest(name, sensors)))
            elif (quantity := sensors[name].get("quantity")) in QUANTITY_UNITS and quantity != "flow":
                issues.append(
                    CrossIssue(loc, f"sensor {name!r} measures {quantity}; a zone inflow must be a flow sensor")
                )
            elif name in seen:
                issues.append(CrossIssue(loc, f"sensor {name!r} is already in this zone_inflow"))
            seen.add(name)
    return issues
