"""The bridge as production runs it: a login and TLS to a real InfluxDB 1.x, its metrics scraped by a real
VictoriaMetrics, /healthz following the real broker and database, and its systemd units checked."""

from __future__ import annotations

import configparser
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.bridge.influx_writer import InfluxV1Writer
from gateway.bridge.metrics import BridgeMetrics
from gateway.bridge.service import Bridge
from gateway.bridge.writer_base import WriteError
from gateway.cli import build_parser, main
from gateway.commands.influx_options import PASSWORD_ENV, make_writer
from gateway.local_services.process import free_port, http_request
from gateway.local_services.victoriametrics import VictoriaMetrics
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings
from tests.influx_auth import BRIDGE, BRIDGE_PASSWORD, start_secure_influx
from tests.mqtt_clients import Publisher
from tests.test_influx_v2 import publish, sent_readings

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "scripts" / "systemd"
_n = itertools.count()
POLL_S = 30.0


def poll(condition, timeout_s: float = POLL_S, every_s: float = 0.1):
    """The first true value of ``condition()`` within ``timeout_s``, else the last one (falsy)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of ``url``/metrics, parsed by prometheus_client's own parser: {(name, labels): value}."""
    status, body = http_request("GET", url + "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def scrape_registry(metrics: BridgeMetrics) -> dict[tuple[str, tuple], float]:
    """The same samples as ``scrape``, straight from the registry (no server)."""
    from prometheus_client import generate_latest

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
    }


def healthz(url: str) -> tuple[int, str]:
    status, body = http_request("GET", url + "/healthz")
    return status, body.decode().strip()


# Tests that take only ``secure`` start a service of their own: mark them like the conftest's fixtures.
needs_influxd = pytest.mark.services


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    """InfluxDB 1.x with authentication on and HTTPS only, a bridge user with rights on ``frugalsense``."""
    setup = start_secure_influx(tmp_path_factory.mktemp("secure_influx"))
    yield setup
    setup.server.stop()


def readings_count(secure, site: str) -> int:
    series = secure.server.query(f"SELECT count(value) FROM reading WHERE site = '{site}'", db=secure.database)
    rows = series["results"][0].get("series", [])
    return rows[0]["values"][0][1] if rows else 0


# ---- v1 login and TLS -------------------------------------------------------------------


def bridge_argv(services, secure, i: int, *extra: str, user: str | None = BRIDGE) -> list[str]:
    login = ["--influx-user", user] if user else []
    return [
        sys.executable,
        "-m",
        "gateway.cli",
        "bridge",
        "--mqtt-port",
        str(services.mqtt_port),
        "--client-id",
        f"bridge-prod-{i}",
        "--prefix",
        f"fsprod{i}",
        "--influx-url",
        secure.url,
        "--influx-ca",
        str(secure.ca),
        *login,
        *extra,
    ]


def test_bridge_command_logs_in_over_https_and_serves_its_health(services, secure):
    i = next(_n)
    site = f"site-prod-{i}"
    argv = bridge_argv(
        services, secure, i, "--influx-password-file", str(secure.bridge_password_file), "--metrics-port", "0"
    )
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, metrics_url = [], None
    try:
        for line in proc.stdout:
            out.append(line)
            if "metrics on " in line:
                metrics_url = line.split("metrics on ")[1].split("/metrics")[0]
            if "running" in line:
                break
        assert metrics_url, "".join(out)
        # What `ps` shows: the password file's name, never the password.
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert BRIDGE_PASSWORD not in cmdline and str(secure.bridge_password_file) in cmdline
        readings = sent_readings(site, 40)
        publish(services.mqtt_port, f"fsprod{i}", site, readings)
        assert poll(lambda: readings_count(secure, site) == 40), "".join(out)
        assert poll(lambda: healthz(metrics_url) == (200, "ok"))
        samples = scrape(metrics_url)
        assert samples[("frugalsense_bridge_points_written_total", (("measurement", "reading"),))] == 40
        assert samples[("frugalsense_bridge_influxdb_reachable", ())] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out.append(proc.communicate(timeout=20)[0])
    assert proc.returncode == 0, "".join(out)


@needs_influxd
def test_password_from_the_environment_logs_in(secure, monkeypatch):
    args = build_parser().parse_args(
        ["bridge", "--influx-url", secure.url, "--influx-ca", str(secure.ca), "--influx-user", BRIDGE]
    )
    monkeypatch.setenv(PASSWORD_ENV, BRIDGE_PASSWORD)
    writer = make_writer(args)
    writer.check_login()
    writer.write(["reading,site=env-login,sensor=F-1 value=1 1700000000000"])
    assert readings_count(secure, "env-login") == 1


def test_a_wrong_password_stops_the_bridge_naming_the_option(services, secure, tmp_path, capsys, monkeypatch):
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    argv = bridge_argv(services, secure, next(_n), "--influx-password-file", str(wrong))[3:]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"refused user '{BRIDGE}'" in err and f"--influx-password-file {wrong}" in err, err
    assert "authorization failed" in err

    monkeypatch.setenv(PASSWORD_ENV, "also-wrong")
    assert main(bridge_argv(services, secure, next(_n))[3:]) == 2
    assert f"check --influx-user and the password in {PASSWORD_ENV}" in capsys.readouterr().err


def test_login_mistakes_are_one_line_each(services, secure, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    i = next(_n)
    assert main(bridge_argv(services, secure, i, user=None)[3:]) == 2
    assert "wants a login" in capsys.readouterr().err

    assert main(bridge_argv(services, secure, i)[3:]) == 2  # a user, no password anywhere
    assert f"--influx-password-file FILE, or the environment variable {PASSWORD_ENV}" in capsys.readouterr().err

    loose = tmp_path / "loose.pass"
    loose.write_text(BRIDGE_PASSWORD)
    loose.chmod(0o644)
    assert main(bridge_argv(services, secure, i, "--influx-password-file", str(loose))[3:]) == 2
    assert f"run chmod 600 {loose}" in capsys.readouterr().err

    no_ca = bridge_argv(services, secure, i, "--influx-password-file", str(secure.bridge_password_file))[3:]
    del no_ca[no_ca.index("--influx-ca") : no_ca.index("--influx-ca") + 2]
    assert main(no_ca) == 2
    assert "certificate is not trusted" in (err := capsys.readouterr().err) and "--influx-ca FILE" in err


@needs_influxd
def test_report_and_influx_setup_take_the_same_login(secure, tmp_path, capsys):
    login = ["--influx-ca", str(secure.ca), "--influx-user", BRIDGE, "--influx-password-file"]
    login.append(str(secure.bridge_password_file))
    argv = ["report", "--site", "nowhere", "--from", "2026-03-01", "--to", "2026-03-02", "--out", str(tmp_path)]
    assert main([*argv, "--influx-url", secure.url, *login]) == 2
    assert "no data for site 'nowhere'" in capsys.readouterr().err  # logged in, over TLS, and asked
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("nope")
    wrong.chmod(0o600)
    assert main([*argv, "--influx-url", secure.url, *login[:-1], str(wrong)]) == 2
    assert f"refused user '{BRIDGE}'" in capsys.readouterr().err


# ---- metrics and /healthz -----------------------------------------------------------------


@pytest.fixture
def metered(services):
    """An in-process bridge on the shared broker and InfluxDB, its metrics served on a free port."""
    i = next(_n)
    prefix, db = f"fsmetrics{i}", f"metrics_test_{i}"
    metrics = BridgeMetrics()
    writer = InfluxV1Writer(services.influx_url, db)
    settings = MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"bridge-metrics-{i}")
    bridge = Bridge(settings, metrics.watch(writer), prefix=prefix).start()
    metrics.attach(bridge)
    server = metrics.serve("127.0.0.1", 0)
    yield prefix, bridge, server.url
    server.close()
    bridge.stop()
    writer.close()


def test_metrics_count_what_landed_by_measurement_and_dead_letters_by_reason(services, metered):
    prefix, bridge, url = metered
    site = f"{prefix}-site"
    with Publisher(services.mqtt_port, client_id=f"{prefix}-raw") as raw:
        topic = T.Topics(prefix, site, "gw-01").readings("F-lake")
        for payload in (b"{nope", b"{nope", b'{"v":7}'):
            raw.publish(topic, payload)
    publish(services.mqtt_port, prefix, site, sent_readings(site, 120))
    assert bridge.wait_idle(quiet_s=0.5, timeout_s=30)
    samples = scrape(url)

    def points(measurement):
        return samples[("frugalsense_bridge_points_written_total", (("measurement", measurement),))]

    # 120 readings, one detection, one alert, the publisher's online and offline status.
    assert (points("reading"), points("detection"), points("alert"), points("gateway_status")) == (120, 1, 1, 2)
    assert (
        sum(points(m) for m in ("reading", "detection", "alert", "gateway_status")) == bridge.counters["points_written"]
    )
    assert samples[("frugalsense_bridge_dead_letters_total", (("reason", "not_json"),))] == 2
    assert samples[("frugalsense_bridge_dead_letters_total", (("reason", "schema_version"),))] == 1
    assert samples[("frugalsense_bridge_messages_received_total", ())] == bridge.counters["messages"]
    assert samples[("frugalsense_bridge_backlog_messages", ())] == 0
    assert samples[("frugalsense_bridge_mqtt_connected", ())] == 1
    assert samples[("frugalsense_bridge_influxdb_reachable", ())] == 1
    writes = samples[("frugalsense_bridge_write_duration_seconds_count", ())]
    assert writes >= 1 and samples[("frugalsense_bridge_write_duration_seconds_bucket", (("le", "+Inf"),))] == writes
    assert healthz(url) == (200, "ok")


def test_healthz_says_503_and_why_while_influxdb_is_down_and_the_backlog_grows(services, metered):
    prefix, bridge, url = metered
    site = f"{prefix}-site"
    services.stop_service("influxdb")
    try:
        # Before the first write fails, /healthz already says 503 from /ping; then it names the write.
        assert healthz(url) == (503, f"influxdb: {services.influx_url} does not answer /ping")
        publish(services.mqtt_port, prefix, site, sent_readings(site, 30))
        status, why = poll(lambda: "last write failed" in (h := healthz(url))[1] and h)
        assert status == 503 and why.startswith("influxdb: last write failed: InfluxDB") and "unreachable" in why
        samples = scrape(url)
        assert samples[("frugalsense_bridge_influxdb_reachable", ())] == 0
        assert samples[("frugalsense_bridge_backlog_messages", ())] > 0  # held, unacknowledged, not lost
        assert samples[("frugalsense_bridge_write_failures_total", (("reason", "unreachable"),))] >= 1
    finally:
        services.start_service("influxdb")
    assert bridge.wait_idle(quiet_s=0.5, timeout_s=60)
    assert poll(lambda: healthz(url) == (200, "ok"))
    assert scrape(url)[("frugalsense_bridge_backlog_messages", ())] == 0


def test_data_the_database_refuses_is_counted_but_leaves_the_bridge_healthy(services):
    """A field type conflict (400) is the data's fault, dead-lettered by the bridge: no reason for a 503."""
    metrics = BridgeMetrics()
    writer = metrics.watch(InfluxV1Writer(services.influx_url, f"metrics_refused_{next(_n)}"))
    writer.ensure_database()
    writer.write(["reading,site=x,sensor=F-1 value=1 1700000000000"])
    with pytest.raises(WriteError) as refused:
        writer.write(['reading,site=x,sensor=F-1 value="text" 1700000001000'])
    assert refused.value.status == 400 and not refused.value.retryable
    assert metrics.influxdb_state() == (True, True, "")
    samples = {k: v for k, v in scrape_registry(metrics).items() if k[0].endswith("write_failures_total")}
    assert samples == {("frugalsense_bridge_write_failures_total", (("reason", "400"),)): 1.0}


def test_an_idle_v2_bridge_asks_the_server_itself(vm_services):
    """No write yet: InfluxDB is "fine" only if /ping answers (VictoriaMetrics' does; nobody's does not)."""
    from gateway.bridge.influx_v2 import InfluxV2Writer

    metrics = BridgeMetrics()
    metrics.watch(InfluxV2Writer(vm_services.vm_url, "fleet"))
    assert metrics.influxdb_state() == (True, True, "")
    nobody = f"http://127.0.0.1:{free_port()}"
    metrics.watch(InfluxV2Writer(nobody, "fleet"))
    assert metrics.influxdb_state() == (False, False, f"{nobody} does not answer /ping")
    assert metrics.health() == (False, f"mqtt: not connected to the broker; influxdb: {nobody} does not answer /ping")


def test_healthz_says_503_while_the_broker_is_away(services, metered):
    prefix, bridge, url = metered
    services.stop_service("mosquitto")
    try:
        status, why = poll(lambda: (h := healthz(url))[0] == 503 and h)
        assert why == f"mqtt: not connected to {services.mqtt_host}:{services.mqtt_port}"
        assert scrape(url)[("frugalsense_bridge_mqtt_connected", ())] == 0
    finally:
        services.start_service("mosquitto")
    assert poll(lambda: healthz(url) == (200, "ok"))


# ---- a real Prometheus-protocol client scrapes it -------------------------------------------


class ScrapingVictoriaMetrics(VictoriaMetrics):
    """VictoriaMetrics that also scrapes Prometheus targets (its ``-promscrape.config``)."""

    def __init__(self, root: Path, scrape_config: Path):
        super().__init__(root, None)
        self.scrape_config = scrape_config

    def command(self, binary: str) -> list[str]:
        return [*super().command(binary), f"-promscrape.config={self.scrape_config}"]


def vm_query(vm_url: str, promql: str) -> list[dict]:
    query = urllib.parse.urlencode({"query": promql, "nocache": "1"})
    status, body = http_request("GET", f"{vm_url}/api/v1/query?{query}")
    assert status == 200, body
    return json.loads(body)["data"]["result"]


def test_victoriametrics_scrapes_the_points_written_counter(services, metered, tmp_path):
    prefix, bridge, url = metered
    site = f"{prefix}-site"
    publish(services.mqtt_port, prefix, site, sent_readings(site, 200))
    assert bridge.wait_idle(quiet_s=0.5, timeout_s=30)
    written = bridge.counters["points_written"]
    assert written == 200 + 4
    config = tmp_path / "scrape.yml"
    target = urllib.parse.urlsplit(url).netloc
    config.write_text(
        f"scrape_configs:\n  - job_name: frugalsense-bridge\n    scrape_interval: 1s\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    vm = ScrapingVictoriaMetrics(tmp_path, config)
    vm.start(20)
    try:

        def scraped():
            rows = vm_query(vm.url, 'sum(frugalsense_bridge_points_written_total{job="frugalsense-bridge"})')
            return rows and float(rows[0]["value"][1]) == written and rows

        assert poll(scraped, timeout_s=60), vm_query(vm.url, "frugalsense_bridge_points_written_total")
        by_measurement = {
            row["metric"]["measurement"]: float(row["value"][1])
            for row in vm_query(vm.url, "frugalsense_bridge_points_written_total")
        }
        assert by_measurement == {"reading": 200, "detection": 1, "alert": 1, "gateway_status": 2}
        up = vm_query(vm.url, 'up{job="frugalsense-bridge"}')
        assert up and up[0]["metric"]["instance"] == target and up[0]["value"][1] == "1"
    finally:
        vm.stop()


# ---- systemd units ---------------------------------------------------------------------------


UNIT_NAMES = ("frugalsense-bridge.service", "frugalsense-notify.service")


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string(path.read_text())
    return unit


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_units_are_hardened_and_keep_secrets_out_of_the_command_line(name):
    unit = read_unit(UNITS / name)
    service = unit["Service"]
    assert service["ExecStart"].startswith("/opt/frugalsense/venv/bin/frugalsense ")
    assert service["DynamicUser"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == "2"
    assert service["StateDirectory"] and service["EnvironmentFile"].startswith("-/etc/frugalsense/")
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices", "ProtectKernelTunables"):
        assert service[key] == "yes", key
    assert "password" not in service["ExecStart"].replace("password-file", "").lower()
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_notify_unit_runs_the_documented_command():
    exec_start = read_unit(UNITS / "frugalsense-notify.service")["Service"]["ExecStart"]
    assert exec_start.endswith(
        "frugalsense notify --config /etc/frugalsense/notify.yaml --state-dir /var/lib/frugalsense-notify"
        " $FRUGALSENSE_NOTIFY_ARGS"
    )
    env = dict(
        line.split("=", 1)
        for line in (UNITS / "notify.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    words = exec_start.split(" notify ", 1)[1].replace("$FRUGALSENSE_NOTIFY_ARGS", env["FRUGALSENSE_NOTIFY_ARGS"])
    args = build_parser().parse_args(["notify", *words.split()])
    assert args.mqtt_host == "broker.example.net" and args.mqtt_password_env in env  # the secret it names is there


def test_the_example_environment_file_holds_options_the_bridge_takes():
    """systemd splits an unbraced $FRUGALSENSE_BRIDGE_ARGS at spaces: those words must parse as bridge options."""
    env = dict(
        line.split("=", 1)
        for line in (UNITS / "bridge.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    args = build_parser().parse_args(["bridge", *env["FRUGALSENSE_BRIDGE_ARGS"].split()])
    assert args.mqtt_password_env in env and PASSWORD_ENV in env  # every secret the options name is in the file
    assert args.influx_user and not args.influx_password_file and args.metrics_port == 9108
    unit = read_unit(UNITS / "frugalsense-bridge.service")["Service"]
    assert unit["ExecStart"].endswith(" bridge $FRUGALSENSE_BRIDGE_ARGS")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze on this machine")
@pytest.mark.parametrize("name", UNIT_NAMES)
def test_systemd_analyze_verify_accepts_the_units(name, tmp_path):
    """``systemd-analyze verify`` also checks that ExecStart's program exists: point it at this checkout's."""
    program = ROOT / ".venv" / "bin" / "frugalsense"
    text = (UNITS / name).read_text().replace("/opt/frugalsense/venv/bin/frugalsense", str(program))
    (tmp_path / name).write_text(text)
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "warning"}
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / name)], capture_output=True, text=True, env=env
    )
    # verify exits 0 even on an unknown key or a bad value: it only warns, on stderr.
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(tmp_path / name)],
        capture_output=True,
        text=True,
        env=env,
    )
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert exposure and float(exposure[1]) <= 2.0, security.stdout[-2000:]  # systemd: "OK" up to 2.0
