"""The notifier's chaos rows: kill -9 and SMTP down mid-stream lose no notification (tests/chaos_notify.py).

`make test` runs them with 5 s outages and writes .run/chaos/chaos-notify.md; `make chaos`
with 60 s outages and rewrites docs/chaos-notify.md.
"""

from __future__ import annotations

import pytest

from tests import chaos, chaos_notify

ROWS: list = []


@pytest.mark.parametrize("scenario", chaos_notify.SCENARIOS, ids=lambda s: s.__name__)
def test_no_notification_is_lost(services, tmp_path, scenario):
    row = scenario(services, tmp_path, chaos.outage_s())
    ROWS.append(row)
    assert row.lost == 0, row
    assert row.dead_letters == 0, row
    # Only a mail accepted by SMTP in the instant before a kill may go twice (at most one per kill).
    assert row.duplicated <= (3 if scenario is chaos_notify.notifier_kill9 else 0), row


def test_the_rows_are_written():
    assert ROWS, "run with the scenarios"
    json_path, md_path = chaos_notify.write_report(ROWS, chaos.report_dir())
    text = md_path.read_text()
    assert json_path.exists() and all(r.scenario in text for r in ROWS)
