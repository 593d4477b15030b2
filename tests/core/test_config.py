from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from torchmd_core import (
    ConfigError,
    InputFileError,
    SimulationConfig,
    load_config,
    parse_config,
)
from torchmd_core.config import config_schema

GOOD = """\
system:
  topology: structure.prmtop
  coordinates: structure.pdb
potentials:
  - kind: toy.bonds
  - kind: toy.pairs
    cutoff: 6.0
integrator:
  kind: toy.verlet
  timestep_fs: 2.0
reporters:
  - kind: toy.memory
    interval: 10
steps: 100
seed: 7
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


def test_valid_config_loads_with_component_configs(tmp_path, toy_registry):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.potentials[1].kind == "toy.pairs" and cfg.potentials[1].cutoff == 6.0
    assert cfg.integrator.timestep_fs == 2.0 and cfg.steps == 100 and cfg.seed == 7
    # relative paths are relative to the config file
    assert cfg.system.topology == tmp_path / "structure.prmtop"


def test_all_problems_reported_at_once_with_paths_and_lines(tmp_path, toy_registry):
    text = GOOD.replace("cutoff: 6.0", "cutoff: -6.0").replace(
        "timestep_fs: 2.0", "timestep_fs: -2.0"
    )
    text = text.replace("steps: 100", "steps: -1")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    msg = str(info.value)
    assert "3 problems in config" in msg
    assert (
        "line 7: potentials[1] (kind='toy.pairs').cutoff: must be > 0, got -6.0" in msg
    )
    assert (
        "line 10: integrator (kind='toy.verlet').timestep_fs: must be > 0, got -2.0"
        in msg
    )
    assert "steps: must be >= 0, got -1" in msg


def test_misspelt_key_suggests_the_right_one(tmp_path, toy_registry):
    text = GOOD.replace("timestep_fs: 2.0", "timestep: 2.0")
    with pytest.raises(
        ConfigError,
        match=r"integrator \(kind='toy.verlet'\).timestep: unknown key "
        r"\(did you mean 'timestep_fs'\?\)",
    ):
        load_config(write(tmp_path, text))
    text = GOOD.replace("  coordinates:", "  coordinate:")
    with pytest.raises(
        ConfigError,
        match=r"system.coordinate: unknown key \(did you mean 'coordinates'\?\)",
    ):
        load_config(write(tmp_path, text))


def test_unknown_kind_lists_available(tmp_path, toy_registry):
    with pytest.raises(
        ConfigError,
        match=r"potentials\[0\].kind: no potential named 'toy.bond'. "
        r"Did you mean 'toy.bonds'\?",
    ):
        load_config(write(tmp_path, GOOD.replace("kind: toy.bonds", "kind: toy.bond")))


def test_missing_kind_and_required_fields(tmp_path, toy_registry):
    text = GOOD.replace("  - kind: toy.bonds\n", "  - scale: 2.0\n").replace(
        "steps: 100\n", ""
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "potentials[0]: missing 'kind'" in str(info.value)
    assert "steps: required field missing" in str(info.value)


def test_malformed_yaml_names_file_and_line(tmp_path, toy_registry):
    path = write(tmp_path, GOOD.replace("  kind: toy.verlet", "  kind: [toy.verlet"))
    with pytest.raises(
        InputFileError, match=r"run.yaml' is not valid YAML at line \d+"
    ):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_top_level_must_be_mapping(tmp_path, toy_registry):
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_configs_are_frozen_and_round_trip(toy_registry):
    cfg = parse_config(
        {
            "system": {"topology": "a.prmtop"},
            "potentials": [{"kind": "toy.bonds"}],
            "integrator": {"kind": "toy.verlet"},
            "steps": 3,
        }
    )
    with pytest.raises(ValidationError):
        cfg.steps = 4  # type: ignore[misc]
    dumped = json.loads(cfg.model_dump_json())
    assert dumped["potentials"][0] == {"kind": "toy.bonds", "scale": 1.0}
    again = parse_config(dumped)
    assert again == cfg
    assert again.fingerprint() == cfg.fingerprint()
    longer = parse_config({**dumped, "steps": 10})
    assert (
        longer.fingerprint() == cfg.fingerprint()
    )  # steps may change between segments


def test_box_must_have_3_6_or_9_numbers(toy_registry):
    with pytest.raises(
        ConfigError, match=r"system.box: must have 3, 6 or 9 numbers, got 2"
    ):
        parse_config(
            {
                "system": {"topology": "a.prmtop", "box": [1, 2]},
                "potentials": [{"kind": "toy.bonds"}],
                "integrator": {"kind": "toy.verlet"},
                "steps": 3,
            }
        )


def test_schema_includes_every_installed_kind(toy_registry):
    schema = json.dumps(config_schema())
    for kind in ("toy.bonds", "toy.pairs", "toy.verlet", "toy.memory"):
        assert kind in schema
    assert "Timestep, fs." in schema


def test_every_field_of_the_whole_run_models_has_a_description():
    from torchmd_core.config import MinimizeConfig, SystemConfig

    for model in (SimulationConfig, SystemConfig, MinimizeConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} lacks a description"
