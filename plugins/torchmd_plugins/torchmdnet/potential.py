"""The ``torchmdnet`` potential: a TorchMD-NET network on all atoms or on a region.

Without ``atoms:`` the model sees every atom; combined with ``amber``/``nonbonded`` the
classical terms then act as a prior (as in TorchMD-CG) and are all kept. With ``atoms:``
the model sees only that region and the classical potentials of the same simulation
drop the interactions wholly inside it (mechanical embedding, see
:meth:`torchmd_core.System.without_interactions_within`); interactions between the
region and the rest stay classical.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from torchmd_core import (
    ComponentConfig,
    ConfigError,
    Potential,
    PotentialConfig,
    State,
    System,
    TopologyError,
    units,
)
from torchmd_plugins.torchmdnet.models import (
    accepted_arguments,
    disable_derivative,
    load_model_file,
    max_atom_type,
    model_output,
)

__all__ = ["ENERGY_UNITS", "LENGTH_UNITS", "TorchMDNetPotential"]

#: kcal/mol per model energy unit.
ENERGY_UNITS: dict[str, float] = {
    "kcal/mol": 1.0,
    "kJ/mol": units.KJ_TO_KCAL,
    "eV": units.EV_TO_KCAL_MOL,
    "hartree": units.HARTREE_TO_KCAL_MOL,
}
#: Å per model length unit.
LENGTH_UNITS: dict[str, float] = {
    "angstrom": 1.0,
    "nanometer": units.NM_TO_ANGSTROM,
    "bohr": units.BOHR_TO_ANGSTROM,
}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TorchMDNetPotential(Potential):
    """A TorchMD-NET model (TensorNet, equivariant transformer, ...) as an energy term.

    E = c_E · f_θ(z, x / c_L), with f_θ the model, z the atomic numbers (or
    ``embeddings``) and x the positions of the atoms it covers; c_E (kcal/mol per
    model energy unit) and c_L (Å per model length unit) convert to engine units. All
    replicas go through the model in one call (a batch vector), with their periodic
    boxes when the state has one. Forces are −∂E/∂x by autograd; with grad mode on they
    keep the graph to the model's weights (``trainable: true``), so trajectory losses
    can train it.

    Reads from ``System``: ``atomic_numbers`` (unless ``embeddings`` is given), and the
    topology for an ``atoms:`` selection string.

    References: Pelaez et al., J. Chem. Theory Comput. 20, 4076 (2024) (TorchMD-Net
    2.0); Simeon & De Fabritiis, NeurIPS 2023 (TensorNet).

    Python users with a model in memory pass it as ``module=`` (``model:`` may then be
    left out)::

        config = TorchMDNetPotential.Config(atoms="resname LIG")
        TorchMDNetPotential(config, system, module=net)
    """

    class Config(PotentialConfig):
        kind: Literal["torchmdnet"] = "torchmdnet"
        model: Path | tuple[Path, ...] | None = Field(
            None,
            description="Model file: a TorchMD-NET checkpoint (.ckpt), a list or .zip "
            "of checkpoints (an ensemble, predictions averaged), a TorchScript file or "
            "a torch.export archive (.pt2). Required unless a module is passed in "
            "Python.",
        )
        atoms: str | tuple[int, ...] | None = Field(
            None,
            description="Atoms the model covers: indices or an mdtraj selection "
            "string. The other potentials then drop their interactions wholly inside "
            "this region (ML/MM mechanical embedding). Default: all atoms, the other "
            "potentials unchanged (they act as a prior).",
        )
        embeddings: tuple[int, ...] | None = Field(
            None,
            description="Model atom type of each covered atom, in order (e.g. bead "
            "types of a coarse-grained model). Default: the topology's atomic numbers.",
        )
        energy_unit: Literal["kcal/mol", "kJ/mol", "eV", "hartree"] = Field(
            "kcal/mol",
            description="Energy unit of the model's output (converted to kcal/mol).",
        )
        length_unit: Literal["angstrom", "nanometer", "bohr"] = Field(
            "angstrom",
            description="Length unit of the model's positions and box (engine: Å).",
        )
        precision: Literal["float32", "float64"] | None = Field(
            None,
            description="Evaluate the model in this precision whatever the "
            "simulation's (inputs and energies are converted). Default: the "
            "simulation's precision.",
        )
        use_box: bool = Field(
            True,
            description="Pass the periodic box to the model (it then finds neighbours "
            "by the minimum image; the box must be at least twice the model cutoff "
            "wide). false: the model sees plain coordinates (keep its molecule whole).",
        )
        total_charge: int | None = Field(
            None,
            description="Total charge of the covered atoms, e; passed as the model's "
            "molecule-wise charge input (q) to models that take one. Default: not "
            "passed.",
        )
        trainable: bool = Field(
            True,
            description="Keep the autograd graph to the model's weights when grad "
            "mode is on (energies and forces can train the model). false freezes the "
            "weights (requires_grad off): faster and lighter for inference runs.",
        )

    config: Config
    model: nn.Module
    atoms: Tensor | None
    types: Tensor

    def __init__(
        self, config: Config, system: System, module: nn.Module | None = None
    ) -> None:
        super().__init__(config, system)
        if module is None:
            if config.model is None:
                raise ConfigError(
                    "model: required: give a TorchMD-NET checkpoint (.ckpt), a list or "
                    ".zip of checkpoints, a TorchScript file or a torch.export archive "
                    "(.pt2)"
                )
            module = load_model_file(config.model)
        disable_derivative(module)
        # Exported programs (torch.export) have no eval mode.
        with contextlib.suppress(NotImplementedError):
            module.eval()
        if not config.trainable:
            module.requires_grad_(False)
        if config.precision is not None:
            module.to(dtype=_DTYPES[config.precision])
        self.model = module
        self._accepts: frozenset[str] = accepted_arguments(module)
        atoms = self.replaced_atoms(config, system)
        self.register_buffer("atoms", atoms)  # (M,) or None for all atoms
        self.register_buffer(
            "types", _atom_types(config, system, atoms, max_atom_type(module))
        )
        self.energy_scale = ENERGY_UNITS[config.energy_unit]
        self.inverse_length_scale = 1.0 / LENGTH_UNITS[config.length_unit]
        self.use_box = config.use_box
        self.total_charge = config.total_charge
        self._fixed_dtype = (
            None if config.precision is None else _DTYPES[config.precision]
        )
        self._model_dtype = _floating_dtype(module)
        if config.total_charge is not None and "q" not in self._accepts:
            raise ConfigError(
                "total_charge: this model takes no charge input (q); remove it"
            )
        if system.box is not None:
            self._check_box_support()

    @classmethod
    def replaced_atoms(cls, config: ComponentConfig, system: System) -> Tensor | None:
        cfg = cls.config_from(config)
        assert isinstance(cfg, TorchMDNetPotential.Config)
        if cfg.atoms is None:
            return None
        atoms = system.select(cfg.atoms)
        if torch.unique(atoms).numel() != atoms.numel():
            raise ConfigError(
                "atoms: lists some atom more than once; give each atom once"
            )
        return atoms

    @property
    def n_model_atoms(self) -> int:
        """Number of atoms the model sees (per replica)."""
        return int(self.types.shape[0])

    def energy(self, state: State) -> Tensor:
        positions = (
            state.positions if self.atoms is None else state.positions[:, self.atoms]
        )
        n_rep, n_at = positions.shape[0], positions.shape[1]
        dtype = self._model_dtype
        pos = (positions * self.inverse_length_scale).to(dtype).reshape(n_rep * n_at, 3)
        z = self.types.expand(n_rep, n_at).reshape(-1)
        batch = (
            torch.arange(n_rep, device=pos.device)
            .unsqueeze(1)
            .expand(n_rep, n_at)
            .reshape(-1)
        )
        kwargs: dict[str, Any] = {}
        if state.box is not None and self.use_box:
            self._check_box_support()
            kwargs["box"] = (state.box * self.inverse_length_scale).to(dtype)
        if "num_systems" in self._accepts:
            kwargs["num_systems"] = n_rep  # avoids a device sync for batch.max()
        if self.total_charge is not None:
            kwargs["q"] = torch.full(
                (n_rep,), self.total_charge, dtype=torch.int64, device=pos.device
            )
        y = model_output(self.model(z, pos, batch, **kwargs))  # (R, 1)
        return y.reshape(n_rep).to(state.dtype) * self.energy_scale

    def _check_box_support(self) -> None:
        if self.use_box and "box" not in self._accepts:
            raise ConfigError(
                "torchmdnet: the model takes no periodic box but the system is "
                "periodic; set use_box: false if the model's atoms form one whole "
                "molecule"
            )

    def _apply(self, fn: Any, recurse: bool = True) -> TorchMDNetPotential:
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        # Keep a configured model precision through .to(dtype).
        if getattr(self, "_fixed_dtype", None) is not None:
            self.model.to(dtype=self._fixed_dtype)
        self._model_dtype = _floating_dtype(self.model)
        return self


def _atom_types(
    config: TorchMDNetPotential.Config,
    system: System,
    atoms: Tensor | None,
    max_type: int | None,
) -> Tensor:
    """(M,) int64 model atom type of each covered atom."""
    index = torch.arange(system.n_atoms) if atoms is None else atoms
    if config.embeddings is not None:
        if len(config.embeddings) != index.numel():
            raise ConfigError(
                f"embeddings: {len(config.embeddings)} values given for the "
                f"{index.numel()} atoms the model covers; give one per atom, in the "
                "order of atoms:"
            )
        types = torch.tensor(config.embeddings, dtype=torch.int64)
        where = "embeddings"
    else:
        types = system.atomic_numbers[index].to(torch.int64)
        unknown = torch.nonzero(types <= 0).flatten()
        if unknown.numel():
            a = int(index[unknown[0]])
            raise TopologyError(
                f"atom {a} ({system.atom_names[a]}) has no element (atomic number 0); "
                "leave it out of atoms: or give embeddings:"
            )
        where = "atomic numbers"
    if types.numel() and int(types.min()) < 0:
        raise ConfigError(f"{where}: model atom types must be >= 0")
    if max_type is not None and types.numel() and int(types.max()) >= max_type:
        raise ConfigError(
            f"{where}: type {int(types.max())} is beyond the model's embedding table "
            f"(max_z = {max_type}); use a model trained with these elements"
        )
    return types


def _floating_dtype(module: nn.Module) -> torch.dtype:
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()
