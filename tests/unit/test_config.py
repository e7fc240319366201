"""Configuration: presets, layering, validation messages, YAML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from zaugnet.training.config import build_config, load_yaml, parse_override, save_yaml

from zaugnet.errors import InputError


def test_presets_and_layers_apply_in_order() -> None:
    cfg = build_config({"preset": "small", "train": {"lr": 1e-3}}, parse_override("train.lr=2e-3"))
    assert cfg.preset == "small" and cfg.data.crop_size == 64
    assert cfg.train.lr == 2e-3
    assert cfg.train.lambda_adv == 0.0  # the small preset trains the generator alone
    paper = build_config({})
    assert paper.preset == "paper" and paper.net.block_widths == (240, 150, 90) and paper.train.lambda_adv == 0.001


def test_variant_decides_the_dpm() -> None:
    assert build_config({"net": {"variant": "zaugnet+"}}).net.with_dpm
    assert not build_config({}).net.with_dpm


@pytest.mark.parametrize("layer,field", [
    ({"train": {"nonsense": 1}}, "train.nonsense"),
    ({"train": {"batch_size": "abc"}}, "train.batch_size"),
    ({"net": {"variant": "zaugnet++"}}, "net.variant"),
    ({"data": {"augment": "maybe"}}, "data.augment"),
    ({"data": {"percentiles": [99, 1]}}, "data"),
    ({"preset": "huge"}, "preset"),
])
def test_bad_values_name_the_field(layer: dict, field: str) -> None:
    with pytest.raises(InputError) as err:
        build_config(layer, source="my.yaml")
    assert field in str(err.value) and "my.yaml" in str(err.value)


def test_boolean_strings_are_not_silently_true() -> None:
    """The reference code parsed "False" as True; YAML reading gives real booleans."""
    assert build_config(parse_override("data.augment=false")).data.augment is False
    assert build_config(parse_override("data.augment=False")).data.augment is False


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = build_config({"preset": "small", "net": {"variant": "zaugnet+"}})
    save_yaml(cfg, tmp_path / "config.yaml")
    again = build_config(load_yaml(tmp_path / "config.yaml"))
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["net"]["variant"] == "zaugnet+"


@pytest.mark.parametrize("text,problem", [("- a\n- b\n", "mapping"), ("a: [\n", "YAML")])
def test_bad_yaml_files(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as err:
        load_yaml(path)
    assert "bad.yaml" in str(err.value)


def test_override_needs_key_and_value() -> None:
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_override("train.lr")
