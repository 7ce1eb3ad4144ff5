"""Every config in firmware_configs/ flashes, and the bundle's own config validates from inside the bundle.

The configs are flashed from a copy of the checkout (firmware_configs/, models/, and the
demo's dataset where `frugalsense demo` writes it, .run/demo/), so the relative paths
they name are the ones a technician's checkout has.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.datasets import ZoneDataset
from gateway.cli import main
from gateway.config import load_config
from gateway.tools import bundle as B

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware_configs"
CONFIGS = sorted(p.relative_to(FIRMWARE).as_posix() for p in FIRMWARE.rglob("*.yaml"))


def demo_dataset(path: Path) -> Path:
    """A small dataset with the Net3 demo's columns, standing in for the one the demo simulates."""
    config = load_config(FIRMWARE / "net3-demo.yaml")
    sensors = [(s.column, s.quantity) for s in config.sensors]
    ZoneDataset(
        time_ms=np.arange(4, dtype=np.int64) * 900_000,
        values=np.ones((4, len(sensors)), dtype=np.float32),
        columns=[c for c, _ in sensors],
        quantities=[q for _, q in sensors],
        units=["L/s" if q == "flow" else "m" for _, q in sensors],
        leak_flow_lps=np.zeros(4, dtype=np.float32),
    ).save(path)
    return path


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(FIRMWARE, root / "firmware_configs")
    (root / "models").symlink_to(ROOT / "models")
    (root / ".run" / "demo").mkdir(parents=True)
    demo_dataset(root / ".run" / "demo" / "net3-leak.npz")
    return root


def test_there_are_firmware_configs_to_flash():
    assert {"net3-demo.yaml", "air-demo.yaml", "water-dma.yaml", "mixed.yaml"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_firmware_config_flashes_and_its_bundle_validates_from_the_bundle(name, checkout, tmp_path, capsys):
    card = tmp_path / "card"
    assert main(["flash", str(checkout / "firmware_configs" / name), "--to", str(card)]) == 0, capsys.readouterr()
    assert "validates, detectors built from the bundle" in capsys.readouterr().out

    # On the gateway the bundle is a folder of its own: move it away from the checkout and check it there.
    installed = tmp_path / "etc-frugalsense"
    shutil.move(card, installed)
    config = load_config(installed / B.CONFIG_NAME, build_detectors=True)
    listing = B.read_checksums(installed)
    for named in B.config_paths(config):
        if not named.path.is_absolute():  # absolute: the gateway's own files, checked there by doctor
            assert ".." not in named.path.parts, named
            assert any(f == named.path.as_posix() or f.startswith(f"{named.path.as_posix()}/") for f in listing)
    data_dir = config.storage.data_dir
    assert data_dir.is_absolute() or ".." not in data_dir.parts
    assert main(["config", "validate", str(installed / B.CONFIG_NAME)]) == 0
    assert main(["doctor", "--bundle", str(installed)]) == 0, capsys.readouterr().out


def test_the_net3_demo_bundle_carries_its_model_and_dataset_and_points_at_them(checkout, tmp_path, capsys):
    source = checkout / "firmware_configs" / "net3-demo.yaml"
    card = tmp_path / "card"
    assert main(["flash", str(source), "--to", str(card)]) == 0
    out = capsys.readouterr().out
    assert "sources.replay.file: ../.run/demo/net3-leak.npz -> data/net3-leak.npz" in out
    assert "models[1].model_dir: ../models/leak-mlp-net3 -> models/leak-mlp-net3" in out
    assert "storage.data_dir: ../.run/demo/gw-net3-01 -> /var/lib/frugalsense" in out
    flashed = (card / B.CONFIG_NAME).read_text()
    assert flashed == (
        source.read_text()
        .replace("file: ../.run/demo/net3-leak.npz", "file: data/net3-leak.npz")
        .replace("model_dir: ../models/leak-mlp-net3", "model_dir: models/leak-mlp-net3")
        .replace("data_dir: ../.run/demo/gw-net3-01", "data_dir: /var/lib/frugalsense")
    )
    assert (card / "data" / "net3-leak.npz").read_bytes() == (checkout / ".run/demo/net3-leak.npz").read_bytes()
    assert ZoneDataset.load(card / "data" / "net3-leak.npz").columns[:2] == ["10", "60"]
    manifest = (ROOT / "models" / "leak-mlp-net3" / "manifest.json").read_bytes()
    assert (card / "models" / "leak-mlp-net3" / "manifest.json").read_bytes() == manifest


def test_flashing_the_net3_demo_before_the_demo_ran_says_what_writes_the_dataset(tmp_path, capsys):
    folder = tmp_path / "firmware_configs"
    folder.mkdir()
    shutil.copy(FIRMWARE / "net3-demo.yaml", folder)
    (tmp_path / "models").symlink_to(ROOT / "models")
    assert main(["flash", str(folder / "net3-demo.yaml"), "--to", str(tmp_path / "card")]) == 2
    err = capsys.readouterr().err
    assert f"sources.replay.file: {tmp_path / '.run/demo/net3-leak.npz'} does not exist" in err
    assert "`frugalsense demo` writes the demo's" in err
    assert not (tmp_path / "card").exists()


def test_flash_refuses_a_config_whose_detectors_do_not_build_and_writes_nothing(checkout, tmp_path, capsys):
    text = (checkout / "firmware_configs" / "net3-demo.yaml").read_text()
    broken = checkout / "firmware_configs" / "net3-no-pressure.yaml"
    broken.write_text("".join(line for line in text.splitlines(True) if "quantity: pressure" not in line))
    try:
        assert main(["flash", str(broken), "--to", str(tmp_path / "card")]) == 2
    finally:
        broken.unlink()
    err = capsys.readouterr().err
    assert "models[1] (leak-ml): model leak-mlp-net3 needs pressure at 101, 123, 141, 173, 247" in err
    assert not (tmp_path / "card").exists()


def test_doctor_fails_the_config_of_a_bundle_whose_model_no_longer_builds(checkout, tmp_path, capsys):
    card = tmp_path / "card"
    assert main(["flash", str(checkout / "firmware_configs" / "net3-demo.yaml"), "--to", str(card)]) == 0
    weights = card / "models" / "leak-mlp-net3" / "leak-mlp-net3.npz"
    weights.write_bytes(weights.read_bytes()[:-1])
    capsys.readouterr()
    assert main(["doctor", "--bundle", str(card)]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert [line.split()[1] for line in failed] == ["bundle", "config", "model"]
    assert "models[1] (leak-ml): cannot build its detector" in failed[1] and "leak-mlp-net3.npz" in failed[1]
