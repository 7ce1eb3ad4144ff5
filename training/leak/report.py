"""The leak model's training report: plots (PNG) and markdown, next to its card.

``report/timeline.png``: a few held-out scenarios, true leak flow against the
learned score and the alarms of the learned detector and MNF; ``report/scores.png``:
score distribution on leak and leak-free steps; ``report/delay.png``: detection delay
against hole diameter, learned against the best MNF. ``report/report.md`` holds every
table. ``leak_sections`` are the leak parts of ``card.md``, the one-page summary
written by ``training.cards``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training.leak.evaluate import leak_delays  # noqa: E402

DPI = 80
COLUMNS = ("f1", "tpr", "tnr", "early_detection", "detected_share", "median_delay_h", "false_alarms_per_30_days")


def _save(fig, report: Path, name: str, **layout) -> str:
    """Lay out, write ``report/name``, release the figure; return the file name for the card."""
    fig.tight_layout(**layout)
    fig.savefig(report / name, dpi=DPI)
    plt.close(fig)
    return name


def write_report(out: Path, card: dict, sets: dict, traces: dict, float_run: str) -> None:
    """Write ``report/`` (plots and ``report.md``) of one evaluated model."""
    report = out / "report"
    report.mkdir(exist_ok=True)
    images = []
    if "heldout" in sets:
        s, tr = sets["heldout"], traces["heldout"]
        best_mnf = _best_mnf(card["metrics"]["by_set"]["heldout"])
        images += [
            _timeline(report, s, tr[float_run], tr.get(best_mnf), best_mnf),
            _scores(report, s, tr[float_run]),
            _delays(report, s, tr[float_run], tr.get(best_mnf), best_mnf),
        ]
    (report / "report.md").write_text(_report_md(card, [i for i in images if i]))


def _best_mnf(metrics: dict) -> str:
    mnf = {k: v["leaks_ge_5cm"]["f1"] or 0 for k, v in metrics.items() if k.startswith("mnf_")}
    return max(mnf, key=mnf.get)


def _timeline(report: Path, s, learned, mnf, mnf_name: str) -> str:
    picks = []
    for kind in ("abrupt", "incipient"):
        picks += [
            i
            for i, sc in enumerate(s.scenarios)
            if (sc.get("leak") or {}).get("kind") == kind and sc["leak"]["diameter_m"] >= 0.05
        ][:1]
    picks += [i for i, sc in enumerate(s.scenarios) if (sc.get("leak") or {}).get("diameter_m", 1) < 0.05][:1]
    picks += [i for i, sc in enumerate(s.scenarios) if not sc.get("leak")][:1]
    days = (s.time_ms - s.time_ms[0]) / 86_400_000
    fig, axes = plt.subplots(len(picks), 1, figsize=(9, 2.1 * len(picks)), sharex=True)
    for ax, i in zip(np.atleast_1d(axes), picks, strict=True):
        leak = s.scenarios[i].get("leak")
        title = "no leak" if not leak else f"{leak['kind']} leak, {leak['diameter_m'] * 100:.1f} cm at {leak['node']}"
        ax.fill_between(days, 0, s.leak_flow_lps[i], color="tab:blue", alpha=0.3, label="true leak flow (L/s)")
        ax.set_ylabel("L/s")
        ax.set_title(f"scenario {i}: {title}", fontsize=9)
        right = ax.twinx()
        right.plot(days, learned.score[i], color="tab:orange", lw=0.6, label="learned score")
        right.fill_between(days, 1.02, 1.08, where=learned.alarm[i], color="tab:red", label="learned alarm")
        if mnf is not None:
            right.fill_between(days, 1.10, 1.16, where=mnf.alarm[i], color="tab:gray", label=f"{mnf_name} alarm")
        right.set_ylim(0, 1.2)
        right.set_ylabel("score")
    handles = sum((a.get_legend_handles_labels()[0] for a in fig.axes[:1] + fig.axes[len(picks) : len(picks) + 1]), [])
    labels = sum((a.get_legend_handles_labels()[1] for a in fig.axes[:1] + fig.axes[len(picks) : len(picks) + 1]), [])
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("day of scenario")
    return _save(fig, report, "timeline.png", rect=(0, 0, 1, 0.95))


def _scores(report: Path, s, learned) -> str:
    ok = learned.valid
    fig, ax = plt.subplots(figsize=(6, 3))
    bins = np.linspace(0, 1, 41)
    ax.hist(learned.score[ok & ~s.leak_flag], bins=bins, alpha=0.6, label="no leak open", log=True)
    ax.hist(learned.score[ok & s.leak_flag], bins=bins, alpha=0.6, label="leak open", log=True)
    ax.set_xlabel("learned score (P leak)")
    ax.set_ylabel("steps")
    ax.legend(fontsize=8)
    return _save(fig, report, "scores.png")


def _delays(report: Path, s, learned, mnf, mnf_name: str) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for trace, name, marker in ((learned, "learned", "o"), (mnf, mnf_name, "s")):
        if trace is None:
            continue
        d = leak_delays(trace.alarm, s)
        diam = np.array([x["diameter_m"] * 100 for x in d])
        delay = np.array([np.nan if x["delay_s"] is None else x["delay_s"] / 3600 for x in d])
        hit = np.isfinite(delay)
        ax.scatter(diam[hit], delay[hit], s=10, marker=marker, label=f"{name} ({hit.mean():.0%} detected)", alpha=0.7)
        ax.scatter(diam[~hit], np.full((~hit).sum(), 0.5), s=14, marker="x", alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("hole diameter (cm)")
    ax.set_ylabel("detection delay (h); x = missed")
    ax.legend(fontsize=8)
    return _save(fig, report, "delay.png")


def _table(metrics: dict) -> str:
    lines = ["| detector | group | scenarios | " + " | ".join(COLUMNS) + " |", "|---|---|---|" + "---|" * len(COLUMNS)]
    for detector, by_group in metrics.items():
        for group, m in by_group.items():
            cells = ["" if m.get(c) is None else f"{m[c]:.3f}" for c in COLUMNS]
            lines.append(f"| {detector} | {group} | {m['scenarios']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _targets(card: dict) -> str:
    lines = ["| target | value | required | met |", "|---|---|---|---|"]
    lines += [
        f"| {t['name']} | {t['value']} | {t['target']} | {'yes' if t['met'] else 'NO'} |" for t in card["targets"]
    ]
    return "\n".join(lines)


def _bands(card: dict) -> str:
    lines = ["| leaks | learned F1 | best MNF | its F1 | ratio |", "|---|---|---|---|---|"]
    for group, b in card["metrics"].get("mnf_comparison_by_leak_size", {}).items():
        lines.append(f"| {group} | {b['learned_f1']} | {b['best_mnf']} | {b['best_mnf_f1']} | {b['ratio']} |")
    return "\n".join(lines)


def _report_md(card: dict, images: list[str]) -> str:
    parts = [
        f"# Training report: {card['name']} v{card['version']}",
        "",
        "Written by `training/leak/card.py` (`make train`); every figure below is measured.",
        "",
        "## Targets",
        "",
        _targets(card),
        "",
        "## Learned against the best MNF, by leak size (held-out set)",
        "",
        _bands(card),
        "",
    ]
    parts += [card["metrics"]["note"] + ".", ""]
    for key, metrics in card["metrics"]["by_set"].items():
        about = card["data"]["test"].get(key)
        title = (
            (
                f"## Set `{key}`: {about['network']}, {about['scenarios']} scenarios of {about['days']} days "
                f"at {about['step_s'] // 60} min"
            )
            if about
            else f"## `{key}`"
        )
        parts += [title, "", _table(metrics), ""]
    parts += [
        "## Persistence chosen on the validation set",
        "",
        "| raise threshold | raise after (h) | F1 (val leaks) | false alarms / 30 days (val) |",
        "|---|---|---|---|",
    ]
    parts += [
        f"| {t['raise_threshold']} | {t['raise_h']} | {t['f1']} | {t['false_alarms_per_30_days']} |"
        for t in card["data"]["train"]["persistence_trials"]
    ]
    parts += [""] + [f"![{i}]({i})\n" for i in images]
    return "\n".join(parts) + "\n"


def leak_sections(card: dict) -> list[tuple[str, str]]:
    """The leak parts of ``card.md``: the detector and its training, learned against MNF by leak size, the report."""
    d = card["task"]["detector"]
    train = card["data"]["train"]
    sensors = ", ".join(f"{e} ({q})" for e, q in card["data"]["sensors"])
    detector = [
        f"- Network: {card['data']['network']}; sensors: {sensors}",
        f"- Sample step {d['layout']['step_s'] // 60} min",
        f"- Alarm: score >= {d['raise_threshold']} for {d['raise_after']} steps raises; "
        f"< {d['clear_threshold']} for {d['clear_after']} steps clears",
        f"- Trained on {train['rows']} feature rows from {train['scenario_sets']['train']['scenarios']} simulated "
        f"scenarios; built in {card['metrics']['build_seconds']} s",
    ]
    return [
        ("Detector", "\n".join(detector)),
        ("Learned against the best MNF, by leak size", _bands(card)),
        (
            "Report",
            "Full tables and plots: [report/report.md](report/report.md). Metrics are in `card.json` (`metrics`).",
        ),
    ]
