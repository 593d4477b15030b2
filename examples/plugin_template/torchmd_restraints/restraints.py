"""Position restraints: keep selected atoms near reference positions.

Two kinds, with d_i the distance of atom i from its reference position x_i⁰:

- ``restraints.harmonic``: E = k Σ_i d_i²
- ``restraints.flat_bottom``: E = k Σ_i max(0, d_i − r)², free within radius r

Units: E in kcal/mol, k in kcal/mol/Å², distances in Å. ``k`` multiplies the square
directly, as AMBER's ``restraint_wt`` and this engine's bonded terms do (GROMACS and
most OpenMM scripts write ½k: use half their value here).

Atoms are chosen with an mdtraj selection string or a list of indices
(:meth:`torchmd_core.System.select`). Reference positions are the starting structure
(``reference: initial``: the coordinates the system was loaded with, before any
minimisation), a coordinate file read with the installed loaders, or one explicit
``[x, y, z]`` per restrained atom; in Python, pass ``reference=`` a tensor. Every
replica is restrained to the same reference.

Periodic boxes: the displacement x_i − x_i⁰ is the minimum image in the current box, so
wrapping atoms into the box never changes the energy and each atom is held near the
closest periodic copy of its reference. References are absolute positions: they do
not follow the box when a barostat rescales it (GROMACS' ``refcoord-scaling = no``),
so under pressure coupling a restraint also resists changes of volume; restrain only
what must stay put.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor
from torchmd_core import (
    ConfigError,
    InputFileError,
    Potential,
    PotentialConfig,
    State,
    System,
    TopologyError,
    default_registry,
)
from torchmd_core.geometry import minimum_image

__all__ = [
    "FlatBottomRestraint",
    "HarmonicRestraint",
    "PositionRestraint",
    "PositionRestraintConfig",
    "reference_positions",
]

Reference = Literal["initial"] | tuple[tuple[float, float, float], ...] | Path


class PositionRestraintConfig(PotentialConfig):
    """Settings shared by every position restraint."""

    atoms: str | tuple[int, ...] = Field(
        description="Restrained atoms: an mdtraj selection string ('protein and name CA', "
        "'index 0 to 9') or a list of 0-based atom indices."
    )
    k: float = Field(
        gt=0.0, description="Force constant k, kcal/mol/Å² (E = k d², no factor ½)."
    )
    reference: Reference = Field(
        "initial",
        description="Reference positions: 'initial' (the starting structure), a coordinate "
        "file, or one [x, y, z] per restrained atom in Å.",
    )

    @field_validator("atoms")
    @classmethod
    def _valid_atoms(cls, v: str | tuple[int, ...]) -> str | tuple[int, ...]:
        if isinstance(v, str):
            if not v.strip():
                raise ValueError("empty selection; write e.g. 'name CA' or [0, 1, 2]")
            return v
        if not v:
            raise ValueError("must list at least one atom index")
        if min(v) < 0:
            raise ValueError(f"atom indices start at 0, got {min(v)}")
        repeated = sorted({i for i in v if v.count(i) > 1})
        if repeated:
            raise ValueError(f"atom indices must be unique, repeated: {repeated}")
        return v

    @model_validator(mode="after")
    def _reference_matches_atoms(self) -> PositionRestraintConfig:
        ref, atoms = self.reference, self.atoms
        if (
            isinstance(ref, tuple)
            and isinstance(atoms, tuple)
            and len(ref) != len(atoms)
        ):
            raise ValueError(
                f"reference has {len(ref)} positions for {len(atoms)} atoms; give one "
                "[x, y, z] per restrained atom"
            )
        return self


class PositionRestraint(Potential):
    """Base of position restraints: the selection, the reference and the displacements.

    Abstract (subclasses implement :meth:`energy` from :meth:`displacements`) and not
    registered itself.

    Args:
        config: the restraint's settings.
        system: the system whose atoms are selected.
        reference: reference positions in Å, (n_atoms, 3) for the whole system or
            (n_selected, 3); overrides ``config.reference`` (for library use).

    Raises:
        TopologyError: the selection is invalid or matches no atom.
        ConfigError: the reference positions do not fit the selection.
    """

    Config: ClassVar[type[PositionRestraintConfig]] = PositionRestraintConfig
    config: PositionRestraintConfig
    atoms: Tensor  # (n_sel,) int64 buffer
    reference: Tensor  # (n_sel, 3) buffer, Å

    def __init__(
        self,
        config: PositionRestraintConfig,
        system: System,
        reference: Tensor | None = None,
    ) -> None:
        super().__init__(config, system)
        atoms = system.select(config.atoms)
        self.register_buffer("atoms", atoms)  # (n_sel,)
        self.register_buffer(
            "reference", reference_positions(config, system, atoms, reference)
        )  # (n_sel, 3)
        self.k = config.k

    def displacements(self, state: State) -> Tensor:
        """(R, n_sel, 3) x_i − x_i⁰ in Å, the minimum image when the state is periodic."""
        d = state.positions[:, self.atoms] - self.reference
        if state.box is not None:
            d = minimum_image(d, state.box[:, None])
        return d

    def summary(self) -> str:
        """One ASCII line for run headers: kind, atom count, force constant."""
        return f"{self.name} on {self.atoms.numel()} atoms, k = {self.k:g} kcal/mol/A^2"


class HarmonicRestraint(PositionRestraint):
    """Harmonic position restraint: E = k Σ_i |x_i − x_i⁰|², kcal/mol.

    Reads atom names, residues and elements from the System for the selection only.
    Reference: the usual AMBER/CHARMM positional restraint (e.g. AMBER ``ntr=1``).
    """

    class Config(PositionRestraintConfig):
        kind: Literal["restraints.harmonic"] = "restraints.harmonic"

    def energy(self, state: State) -> Tensor:
        return self.k * self.displacements(state).square().sum(dim=(1, 2))  # (R,)


class FlatBottomRestraint(PositionRestraint):
    """Flat-bottom position restraint: E = k Σ_i max(0, |x_i − x_i⁰| − r)², kcal/mol.

    Atoms move freely within ``radius`` of their reference and feel a harmonic wall
    beyond it (GROMACS' flat-bottomed position restraints, spherical geometry).
    """

    class Config(PositionRestraintConfig):
        kind: Literal["restraints.flat_bottom"] = "restraints.flat_bottom"
        radius: float = Field(
            ge=0.0, description="Penalty-free radius r around each reference, Å."
        )

    def __init__(
        self, config: Config, system: System, reference: Tensor | None = None
    ) -> None:
        super().__init__(config, system, reference)
        self.radius = config.radius

    def energy(self, state: State) -> Tensor:
        d2 = self.displacements(state).square().sum(dim=-1)  # (R, n_sel)
        # sqrt has an infinite slope at 0: take it only where d > 0, so that forces stay
        # finite for atoms sitting exactly on their reference (the first step).
        moved = d2 > 0
        d = torch.where(
            moved,
            torch.sqrt(torch.where(moved, d2, torch.ones_like(d2))),
            torch.zeros_like(d2),
        )
        excess = torch.clamp(d - self.radius, min=0.0)
        return self.k * excess.square().sum(dim=-1)  # (R,)


def reference_positions(
    config: PositionRestraintConfig,
    system: System,
    atoms: Tensor,
    given: Tensor | None = None,
) -> Tensor:
    """(n_sel, 3) float64 reference positions of the selected ``atoms``, Å.

    ``given`` (a tensor) wins over ``config.reference``; 'initial' reads the
    coordinates recorded in ``system.metadata["initial_coordinates"]`` when the system
    was loaded from files.
    """
    n_sel = int(atoms.numel())
    if given is not None:
        ref = torch.as_tensor(given).detach().to(device="cpu", dtype=torch.float64)
        if ref.shape == (system.n_atoms, 3):
            return ref[atoms]
        if ref.shape != (n_sel, 3):
            raise ConfigError(
                f"reference: expected ({system.n_atoms}, 3) or ({n_sel}, 3) positions, "
                f"got {tuple(ref.shape)}"
            )
        return ref
    source = config.reference
    if isinstance(source, tuple):
        if len(source) != n_sel:
            raise ConfigError(
                f"reference: {len(source)} positions for the {n_sel} selected atoms; give "
                "one [x, y, z] per restrained atom"
            )
        return torch.tensor(source, dtype=torch.float64)
    if source == "initial":
        coords = system.metadata.get("initial_coordinates")
        if coords is None:
            raise ConfigError(
                "reference 'initial': this System carries no starting structure (one is "
                "recorded when a system is loaded from files). Pass reference=positions "
                "to the constructor, or set reference to a file or explicit positions"
            )
        return torch.as_tensor(coords.positions, dtype=torch.float64)[atoms]
    return _read_reference_file(Path(source), system)[atoms]


def _read_reference_file(path: Path, system: System) -> Tensor:
    """(n_atoms, 3) positions from a coordinate file, read by the installed loaders."""
    if not path.is_file():
        raise InputFileError(f"reference file '{path}' does not exist")
    loader: Any = default_registry().loader_for(path, "coordinates")
    coords = loader.load_coordinates(path, system)
    if coords.n_atoms != system.n_atoms:
        raise TopologyError(
            f"reference file '{path}' has {coords.n_atoms} atoms, the system "
            f"{system.n_atoms}; use a structure of the same system"
        )
    return torch.as_tensor(coords.positions, dtype=torch.float64)
