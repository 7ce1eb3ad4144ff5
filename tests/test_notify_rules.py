"""The notifier's rules file: problems at FILE:LINE with did-you-mean, every Apprise URL built, the example checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config.problems import ConfigError
from gateway.notify.config import load_rules_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "notify.yaml"

GOOD = """\
routes:
  - name: water
    match: {site: "net3-*", kind: leak, min_severity: warning}
    urls: ["json://127.0.0.1:9/hook"]
"""


def check(tmp_path: Path, text: str, capsys) -> tuple[int, str, Path]:
    path = tmp_path / "notify.yaml"
    path.write_text(text)
    code = main(["notify", "--check", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err, path


def test_a_good_file_checks(tmp_path, capsys):
    code, out, path = check(tmp_path, GOOD, capsys)
    assert (code, out.strip()) == (0, f"{path}: ok (1 routes, 1 Apprise URLs)")


@pytest.mark.parametrize(
    "text,line,words",
    [
        (GOOD + "    languag: fr\n", 5, "routes[0].languag: unknown key, did you mean 'language'?"),
        (GOOD.replace("min_severity: warning", "min_severity: warn"), 3, "did you mean 'warning'?"),
        (GOOD.replace("min_severity", "severity_at_least"), 3, "severity_at_least: unknown key"),
        (GOOD + "    language: de\n", 5, "routes[0].language: must be one of 'en' or 'fr'; got 'de'"),
        (GOOD + "    timezone: Europe/Pari\n", 5, "did you mean 'Europe/Paris'?"),
        (GOOD + "    quiet_hours: {start: '22h', end: '07:00'}\n", 5, "quiet_hours.start: must be a time of day HH:MM"),
        (GOOD + "    escalate_to: bosses\n    escalate_after_min: 30\n", 5, "no route has this name"),
        (GOOD + "    escalate_after_min: 30\n", 2, "escalate_after_min and escalate_to go together"),
        (GOOD + "    link: 'https://g/d?site={sit}'\n", 5, "names {sit}, which an alert does not have"),
        (GOOD.replace("json://", "jsno://"), 4, "unknown Apprise scheme 'jsno' (mailto://, ntfy://, json://"),
        (GOOD.replace('"json://127.0.0.1:9/hook"', '"mailto://127.0.0.1:25?from=noc@x"'), 4, "Apprise cannot use"),
        (
            GOOD.replace('"json://127.0.0.1:9/hook"', '"json://${NOTIFY_TEST_UNSET}@h/x"'),
            4,
            "NOTIFY_TEST_UNSET is not set",
        ),
        (GOOD.replace('"json://127.0.0.1:9/hook"', "{fil: hook.url}"), 4, "fil: unknown key, did you mean 'file'?"),
        (GOOD + GOOD[len("routes:\n") :], 5, "'water' is already the name of routes[0]"),
        ("routes: []\n", 1, "routes: must have at least 1 entry"),
    ],
)
def test_a_mistake_is_reported_at_its_line(tmp_path, capsys, text, line, words):
    code, out, path = check(tmp_path, text, capsys)
    assert code == 1
    assert f"{path}:{line}: " in out and words in out, out


def test_one_mistake_is_one_line(tmp_path, capsys):
    _, out, _ = check(tmp_path, GOOD.replace('"json://127.0.0.1:9/hook"', "{fil: hook.url}"), capsys)
    assert len(out.strip().splitlines()) == 1, out


def test_an_alias_bomb_is_refused_unexpanded(tmp_path, capsys):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    code, out, path = check(tmp_path, bomb + GOOD, capsys)
    assert code == 1 and f"{path}:3: aliases (*name) would add more than 500 nodes" in out


def test_a_missing_file_is_unreadable(tmp_path, capsys):
    assert main(["notify", "--check", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read the file" in capsys.readouterr().err


def test_a_url_file_must_be_private_and_is_read(tmp_path, capsys):
    (tmp_path / "hook.url").write_text("json://127.0.0.1:9/secret-path\n")
    os.chmod(tmp_path / "hook.url", 0o644)
    text = GOOD.replace('"json://127.0.0.1:9/hook"', "{file: hook.url}")
    code, out, _ = check(tmp_path, text, capsys)
    assert code == 1 and "is open to other users (mode 0644): run chmod 600" in out
    os.chmod(tmp_path / "hook.url", 0o600)
    assert check(tmp_path, text, capsys)[0] == 0


def test_the_example_in_the_docs_checks(tmp_path, capsys, monkeypatch):
    """docs/examples/notify.yaml, with its secrets where ops put them: env variables and a 0600 file."""
    shutil.copy(EXAMPLE, tmp_path / "notify.yaml")
    (tmp_path / "secrets").mkdir()
    sms = tmp_path / "secrets" / "sms-gateway.url"
    sms.write_text(
        "twilio://AC0123456789abcdef0123456789abcdef:0123456789abcdef0123456789abcdef@+33612345678/+33698765432"
    )
    sms.chmod(0o600)
    monkeypatch.setenv("SMTP_USER", "alertes")
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret")
    assert main(["notify", "--check", str(tmp_path / "notify.yaml")]) == 0
    assert "ok (3 routes, 4 Apprise URLs)" in capsys.readouterr().out
    rules = load_rules_text(EXAMPLE.read_text())
    assert [r.name for r in rules.routes] == ["eau-astreinte", "eau-responsable", "air-office"]


def test_load_rules_text_gives_every_problem_at_once():
    text = GOOD + "    languag: fr\n    group_window_s: -1\n"
    with pytest.raises(ConfigError) as caught:
        load_rules_text(text, "n.yaml")
    assert [p.line for p in caught.value.problems] == [5, 6]
