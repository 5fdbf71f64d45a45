from pathlib import Path

import pytest

from lungaudit.config import ConfigError, TrainConfig, apply_overrides, load_config, packaged_config, to_dict

REPO = Path(__file__).resolve().parents[1]


def test_default_yaml_equals_dataclass_defaults():
    assert load_config(packaged_config()) == TrainConfig()


def test_unknown_key_is_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("cls:\n  mask_probability: 0.3\n")
    with pytest.raises(ConfigError, match="cls.mask_probability"):
        load_config(p)


def test_overrides_are_typed_and_win():
    cfg = apply_overrides(TrainConfig(), ["cls.mask_prob=0", "synth.shortcuts=markers,source", "cls.hflip=true"])
    assert cfg.cls.mask_prob == 0.0 and isinstance(cfg.cls.mask_prob, float)
    assert cfg.synth.shortcuts == ("markers", "source")
    assert cfg.cls.hflip is True
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(TrainConfig(), ["cls.nope=1"])
    with pytest.raises(ConfigError, match="expected int"):
        apply_overrides(TrainConfig(), ["cls.epochs=many"])


def test_round_trip_through_yaml(tmp_path):
    from lungaudit.config import save_config

    cfg = apply_overrides(TrainConfig(), ["seg.decoder_channels=[32,16,8]", "seg.encoder_depth=3"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert to_dict(cfg)["seg"]["decoder_channels"] == [32, 16, 8]


def test_default_yaml_documents_every_key():
    """Equal values are not enough: a key missing from the YAML would be undocumented."""
    import yaml

    data = yaml.safe_load((packaged_config()).read_text())
    for section, values in to_dict(TrainConfig()).items():
        if isinstance(values, dict):
            assert set(values) == set(data[section]), f"{section}: {set(values) ^ set(data[section])}"
        else:
            assert section in data
