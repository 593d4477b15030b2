"""The plugin as torchmd-core sees it: entry point, hooks, a whole config run."""

from __future__ import annotations

import pytest
import toy_components
from torch.testing import assert_close
from torchmd_core import ConfigError, Simulation, discover, load_config
from torchmd_core.cli import main as tmd

from torchmd_restraints import FlatBottomRestraint, HarmonicRestraint, __version__


def test_entry_point_registers_both_kinds():
    registry = discover(distributions=["torchmd-restraints"], disabled=())
    assert not registry.problems, [str(p) for p in registry.problems]
    assert registry.get("potentials", "restraints.harmonic") is HarmonicRestraint
    assert registry.get("potentials", "restraints.flat_bottom") is FlatBottomRestraint
    entry = registry.registration("potentials", "restraints.harmonic")
    assert (entry.distribution, entry.version) == ("torchmd-restraints", __version__)


def test_tmd_plugins_lists_and_checks_the_plugin(capsys):
    from torchmd_core import isolated_registry

    with isolated_registry(distributions=["torchmd-restraints"]):
        assert tmd(["plugins", "--check"]) == 0
    out = capsys.readouterr().out
    assert (
        "restraints.flat_bottom" in out and f"torchmd-restraints {__version__}" in out
    )


def write_config(folder, *potentials: str) -> object:
    """A YAML config over the toy inputs with the given ``potentials:`` items."""
    top, crd = toy_components.write_inputs(folder)
    path = folder / "run.yaml"
    path.write_text(
        "\n".join(
            [
                f"system: {{topology: {top.name}, coordinates: {crd.name}}}",
                "potentials:",
                *(f"  - {p}" for p in potentials),
                "integrator: {kind: verlet, timestep_fs: 1.0}",  # the built-in
                "initial_temperature_K: 300",
                "precision: float64",
                "steps: 20",
            ]
        )
    )
    return path


def test_hook_validate_config_reports_a_missing_reference_file(registry, tmp_path):
    path = write_config(
        tmp_path,
        "{kind: restraints.harmonic, atoms: all, k: 1.0, reference: ref.toycrd}",
    )
    with pytest.raises(
        ConfigError,
        match=r"potentials\[0\] \(kind='restraints.harmonic'\)"
        r"\.reference: file '.*ref.toycrd' does not exist",
    ):
        load_config(path)


def test_hook_run_header_and_a_config_run(registry, tmp_path):
    path = write_config(
        tmp_path,
        "{kind: restraints.harmonic, atoms: element C, k: 10.0}",
        "{kind: restraints.flat_bottom, atoms: [1, 3], k: 5.0, radius: 0.2}",
    )
    simulation = Simulation.from_config(load_config(path))
    start = simulation.state.positions[0]
    harmonic = simulation.potential.potentials[0]
    assert_close(harmonic.reference, start[0::2])  # reference: initial
    assert float(simulation.potential.energy(simulation.state)[0]) == 0.0
    simulation.run(20)
    assert simulation.state.step == 20
    terms = simulation.potential.energy_terms(simulation.state)
    assert (
        float(terms["restraints.harmonic"][0]) > 0.0
    )  # the atoms moved, the springs pull
    assert (
        f"torchmd-restraints {__version__}: restraints.harmonic on 6 atoms, k = 10 kcal/mol/A^2; "
        "restraints.flat_bottom on 2 atoms, k = 5 kcal/mol/A^2"
    ) in simulation.header
