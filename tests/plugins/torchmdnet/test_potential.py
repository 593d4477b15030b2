"""The torchmdnet potential against torchmd-net's own API: energies, forces, batching,
boxes, units, model forms, precision, gradients to the weights, and errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from torchmd_plugins.torchmdnet import TorchMDNetPotential
from torchmd_plugins.torchmdnet.potential import ENERGY_UNITS, LENGTH_UNITS

from tests.plugins.torchmdnet.tiny import (
    reference_energy_forces,
    reference_model,
    save_checkpoint,
    tiny_model,
)
from torchmd_core import (
    ConfigError,
    InputFileError,
    PluginLoadError,
    State,
    TopologyError,
)
from torchmd_core.testing import check_potential, random_state, toy_system

DTYPES = pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64], ids=["f32", "f64"]
)
#: Acceptance: the potential equals the model's own output within 1e-5 relative.
MATCH = {"rtol": 1e-5, "atol": 1e-6}


def make(path: Path | tuple[Path, ...], system, **options) -> TorchMDNetPotential:  # type: ignore[no-untyped-def]
    return TorchMDNetPotential(
        TorchMDNetPotential.Config(model=path, **options), system
    )


def energy_forces(
    potential: TorchMDNetPotential, state: State
) -> tuple[torch.Tensor, torch.Tensor]:
    potential = potential.to(dtype=state.dtype)
    with torch.no_grad():
        return potential.energy_and_forces(state)


@DTYPES
@pytest.mark.parametrize("n_replicas", [1, 3], ids=["single", "replicas"])
def test_energy_and_forces_equal_the_models_own(tiny_ckpt, dtype, n_replicas):
    system = toy_system(12)
    state = random_state(system, n_replicas=n_replicas, dtype=dtype, seed=4)
    energy, forces = energy_forces(make(tiny_ckpt, system), state)
    ref = reference_model(tiny_ckpt).to(dtype)
    e_ref, f_ref = reference_energy_forces(ref, system.atomic_numbers, state.positions)
    assert energy.dtype == dtype
    assert_close(energy, e_ref, **MATCH)
    assert_close(forces, f_ref, **MATCH)


@DTYPES
def test_periodic_box_is_passed_to_the_model(tiny_ckpt, dtype):
    system = toy_system(12)
    state = random_state(
        system, n_replicas=2, box=(11.0, 12.0, 13.0), dtype=dtype, seed=1
    )
    # Stretch replica 1's box so that each replica needs its own box.
    box = state.box.clone()
    box[1] *= 1.1
    state = state.replace(box=box)
    energy, forces = energy_forces(make(tiny_ckpt, system), state)
    ref = reference_model(tiny_ckpt).to(dtype)
    for r in range(2):
        e_ref, f_ref = reference_energy_forces(
            ref, system.atomic_numbers, state.positions[r : r + 1], state.box[r]
        )
        assert_close(energy[r : r + 1], e_ref, **MATCH)
        assert_close(forces[r : r + 1], f_ref, **MATCH)
    # The box matters here: without it the energy differs (the chain outgrows the box).
    e_open, _ = reference_energy_forces(ref, system.atomic_numbers, state.positions[:1])
    assert not torch.allclose(e_open, energy[:1], rtol=1e-3)


def test_use_box_false_gives_the_open_boundary_energy(tiny_ckpt):
    system = toy_system(12)
    state = random_state(system, n_replicas=2, box=12.0, seed=1)
    energy, _ = energy_forces(make(tiny_ckpt, system, use_box=False), state)
    e_ref, _ = reference_energy_forces(
        reference_model(tiny_ckpt), system.atomic_numbers, state.positions
    )
    assert_close(energy, e_ref, **MATCH)


@pytest.mark.parametrize(
    ("energy_unit", "length_unit"),
    [("kJ/mol", "nanometer"), ("eV", "angstrom"), ("hartree", "bohr")],
)
def test_model_units_are_converted_to_kcal_mol_and_angstrom(
    tiny_ckpt, energy_unit, length_unit
):
    system = toy_system(8)
    # Positions in the model's unit keep a sensible geometry (~1.2 model units apart).
    state = random_state(
        system, n_replicas=2, spacing=1.5 * LENGTH_UNITS[length_unit], seed=2
    )
    energy, forces = energy_forces(
        make(tiny_ckpt, system, energy_unit=energy_unit, length_unit=length_unit), state
    )
    c_e, c_l = ENERGY_UNITS[energy_unit], LENGTH_UNITS[length_unit]
    e_ref, f_ref = reference_energy_forces(
        reference_model(tiny_ckpt), system.atomic_numbers, state.positions / c_l
    )
    assert_close(energy, c_e * e_ref, **MATCH)
    assert_close(forces, c_e / c_l * f_ref, **MATCH)


def test_atoms_restricts_the_model_to_a_region(tiny_ckpt):
    system = toy_system(12)
    state = random_state(system, n_replicas=2, seed=3)
    region = [2, 3, 4, 5, 9]
    energy, forces = energy_forces(make(tiny_ckpt, system, atoms=region), state)
    idx = torch.tensor(region)
    e_ref, f_ref = reference_energy_forces(
        reference_model(tiny_ckpt), system.atomic_numbers[idx], state.positions[:, idx]
    )
    assert_close(energy, e_ref, **MATCH)
    assert_close(forces[:, idx], f_ref, **MATCH)
    outside = torch.ones(12, dtype=torch.bool)
    outside[idx] = False
    assert torch.equal(forces[:, outside], torch.zeros_like(forces[:, outside]))


def test_atoms_accepts_an_mdtraj_selection(tiny_ckpt):
    system = toy_system(12)
    pot = make(tiny_ckpt, system, atoms="index 0 to 3")
    assert pot.atoms.tolist() == [0, 1, 2, 3]
    assert pot.n_model_atoms == 4


def test_explicit_embeddings_replace_atomic_numbers(tiny_ckpt):
    system = toy_system(6)
    state = random_state(system, n_replicas=2, seed=5)
    types = (1, 2, 3, 4, 5, 6)
    energy, _ = energy_forces(make(tiny_ckpt, system, embeddings=types), state)
    e_ref, _ = reference_energy_forces(
        reference_model(tiny_ckpt), torch.tensor(types), state.positions
    )
    assert_close(energy, e_ref, **MATCH)


def test_ensemble_averages_its_members(tiny_ckpt_pair):
    system = toy_system(10)
    state = random_state(system, n_replicas=2, seed=6)
    energy, forces = energy_forces(make(tiny_ckpt_pair, system), state)
    refs = [
        reference_energy_forces(
            reference_model(p), system.atomic_numbers, state.positions
        )
        for p in tiny_ckpt_pair
    ]
    assert_close(energy, (refs[0][0] + refs[1][0]) / 2, **MATCH)
    assert_close(forces, (refs[0][1] + refs[1][1]) / 2, **MATCH)


def test_zip_of_checkpoints_is_an_ensemble(tiny_ckpt_pair, tmp_path):
    import zipfile

    archive = tmp_path / "ensemble.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in tiny_ckpt_pair:
            z.write(p, p.name)
    system = toy_system(10)
    state = random_state(system, n_replicas=2, seed=6)
    from_zip, _ = energy_forces(make(archive, system), state)
    from_list, _ = energy_forces(make(tiny_ckpt_pair, system), state)
    assert_close(from_zip, from_list, **MATCH)


def test_torchscript_file_gives_the_checkpoints_energy(tiny_ckpt, tmp_path):
    scripted = torch.jit.script(reference_model(tiny_ckpt, derivative=True))
    path = tmp_path / "model.pt"
    scripted.save(str(path))
    system = toy_system(12)
    state = random_state(system, n_replicas=3, box=14.0, seed=7)
    e_ts, f_ts = energy_forces(make(path, system), state)
    e_ck, f_ck = energy_forces(make(tiny_ckpt, system), state)
    assert_close(e_ts, e_ck, **MATCH)
    assert_close(f_ts, f_ck, **MATCH)


def test_exported_program_gives_the_checkpoints_energy(tiny_ckpt, tmp_path):
    system = toy_system(6)
    state = random_state(system, n_replicas=2, seed=8)
    model = reference_model(tiny_ckpt, derivative=False)
    z = system.atomic_numbers.repeat(2)
    batch = torch.arange(2).repeat_interleave(6)
    # torchmd-net needs num_systems for torch.export (no data-dependent batch size).
    exported = torch.export.export(
        model, (z, state.positions.reshape(-1, 3), batch), {"num_systems": 2}
    )
    path = tmp_path / "model.pt2"
    torch.export.save(exported, str(path))
    e_ex, f_ex = energy_forces(make(path, system), state)
    e_ck, f_ck = energy_forces(make(tiny_ckpt, system), state)
    assert_close(e_ex, e_ck, **MATCH)
    assert_close(f_ex, f_ck, **MATCH)


def test_fixed_precision_keeps_the_model_in_float32(tiny_ckpt):
    system = toy_system(8)
    state = random_state(system, n_replicas=2, dtype=torch.float64, seed=9)
    pot = make(tiny_ckpt, system, precision="float32").to(dtype=torch.float64)
    assert next(pot.model.parameters()).dtype == torch.float32
    energy, forces = energy_forces(pot, state)
    assert energy.dtype == torch.float64 and forces.dtype == torch.float64
    e_ref, _ = reference_energy_forces(
        reference_model(tiny_ckpt).float(),
        system.atomic_numbers,
        state.positions.float(),
    )
    assert_close(energy, e_ref.double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("box", [None, 13.0], ids=["open", "periodic"])
def test_passes_the_conformance_checks(tiny_ckpt, box):
    system = toy_system(10)
    check_potential(
        make(tiny_ckpt, system), random_state(system, n_replicas=3, box=box, seed=10)
    )


def test_all_replicas_go_through_the_model_in_one_call(tiny_ckpt):
    system = toy_system(8)
    pot = make(tiny_ckpt, system)
    calls: list[int] = []
    pot.model.register_forward_hook(
        lambda mod, args, out: calls.append(int(args[0].shape[0]))
    )
    pot.energy(random_state(system, n_replicas=5, seed=11))
    assert calls == [5 * 8]


# -- gradients to the weights -------------------------------------------------------


def test_forces_keep_the_graph_to_the_weights_in_grad_mode(tiny_ckpt):
    system = toy_system(8)
    state = random_state(system, n_replicas=2, seed=12)
    pot = make(tiny_ckpt, system)
    energy, forces = pot.energy_and_forces(state)
    assert energy.requires_grad and forces.requires_grad
    weight = next(pot.model.parameters())
    (grad,) = torch.autograd.grad(forces.square().sum(), weight)
    assert grad.abs().sum() > 0


def test_trainable_false_freezes_the_weights_for_inference(tiny_ckpt):
    system = toy_system(8)
    state = random_state(system, n_replicas=2, seed=12)
    pot = make(tiny_ckpt, system, trainable=False)
    assert not any(p.requires_grad for p in pot.parameters())
    energy, forces = pot.energy_and_forces(state)
    assert not energy.requires_grad and not forces.requires_grad
    frozen, _ = energy_forces(pot, state)
    assert_close(frozen, energy_forces(make(tiny_ckpt, system), state)[0], **MATCH)


def test_module_passed_in_python_is_used_as_is():
    system = toy_system(6)
    state = random_state(system, n_replicas=2, seed=13)
    net = tiny_model(5)
    pot = TorchMDNetPotential(TorchMDNetPotential.Config(), system, module=net)
    assert pot.model is net
    with torch.no_grad():
        y, _ = net(
            system.atomic_numbers.repeat(2),
            state.positions.reshape(-1, 3),
            torch.arange(2).repeat_interleave(6),
        )
    assert_close(pot.energy(state).detach(), y.reshape(2), **MATCH)


# -- errors -------------------------------------------------------------------------


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        make(tmp_path / "nope.ckpt", toy_system(4))


def test_a_file_that_is_no_model_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a model")
    with pytest.raises(InputFileError, match="cannot load TorchMD-NET model"):
        make(junk, toy_system(4))
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(InputFileError, match="not a TorchMD-NET checkpoint"):
        make(other, toy_system(4))


def test_no_model_and_no_module_is_a_config_error():
    with pytest.raises(ConfigError, match="model: required"):
        TorchMDNetPotential(TorchMDNetPotential.Config(), toy_system(4))


def test_embeddings_must_match_the_covered_atoms(tiny_ckpt):
    with pytest.raises(ConfigError, match="3 values given for the 4 atoms"):
        make(tiny_ckpt, toy_system(8), atoms=[0, 1, 2, 3], embeddings=[1, 1, 6])


def test_atom_types_beyond_the_models_table_are_rejected(tiny_ckpt):
    with pytest.raises(ConfigError, match="max_z = 10"):
        make(tiny_ckpt, toy_system(4), embeddings=[1, 6, 12, 1])


def test_atoms_without_element_are_rejected(tiny_ckpt):
    system = toy_system(4)
    system.atomic_numbers[2] = 0
    with pytest.raises(TopologyError, match=r"atom 2 .* no element"):
        make(tiny_ckpt, system)


def test_duplicate_region_atoms_are_rejected(tiny_ckpt):
    with pytest.raises(ConfigError, match="more than once"):
        make(tiny_ckpt, toy_system(6), atoms=[0, 1, 1])


def test_missing_torchmdnet_is_a_plugin_load_error(tiny_ckpt, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmdnet.models", None)
    with pytest.raises(
        PluginLoadError,
        match=r'needs torchmd-net: pip install "torchmd-core\[torchmdnet\]"',
    ):
        make(tiny_ckpt, toy_system(4))


def test_total_charge_reaches_models_that_take_one(tiny_ckpt):
    system = toy_system(6)
    state = random_state(system, n_replicas=2, seed=14)
    pot = make(tiny_ckpt, system, total_charge=0)
    calls: list[torch.Tensor] = []
    pot.model.register_forward_hook(
        lambda mod, args, kwargs, out: calls.append(kwargs["q"]), with_kwargs=True
    )
    pot.energy(state)
    assert calls[0].tolist() == [0, 0]


def test_checkpoint_written_in_float32_follows_the_simulation_precision(tmp_path):
    path = save_checkpoint(
        tiny_model(3, precision=32), tmp_path / "f32.ckpt", precision=32
    )
    system = toy_system(6)
    pot = make(path, system).to(dtype=torch.float64)
    assert next(pot.model.parameters()).dtype == torch.float64
    assert pot.energy(random_state(system, seed=1)).dtype == torch.float64
