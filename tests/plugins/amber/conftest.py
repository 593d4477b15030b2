"""Fixtures of the amber plugin tests: the stored inputs and OpenMM references."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchmd_plugins.amber.bonded import AmberBonded
from torchmd_plugins.amber.prmtop import read_prmtop
from torchmd_plugins.amber.psf import read_psf

from tests.conftest import DATA, REFERENCE
from torchmd_core import State, System

#: System name → how to load it from tests/data (topology, parameter files).
SYSTEMS = {
    "ala2_solv": ("ala2_solv/structure.prmtop", ()),
    "ala2_vacuum": ("ala2_vacuum/ala2_vacuum.prmtop", ()),
    "ala2_ljpair": ("ala2_ljpair/ala2_ljpair.prmtop", ()),
    "ala2_solv_ljpair": ("ala2_solv_ljpair/structure_ljpair.prmtop", ()),
    "ala3": ("ala3/ala_ala_ala.psf", ("ala3/charmm22.rtf", "ala3/charmm22.par")),
    "benzamidine": (
        "benzamidine/mol.psf",
        ("benzamidine/mol.rtf", "benzamidine/mol.prm"),
    ),
    "waterbox": ("waterbox/structure.psf", ("waterbox/parameters.prm",)),
    "peptide_ff19sb": ("peptide_ff19sb/system.xml", ("peptide_ff19sb/structure.pdb",)),
    "peptide_dodec": ("peptide_dodec/system.xml", ("peptide_dodec/structure.pdb",)),
}

BONDED_TERMS = (
    "bonds", "angles", "urey_bradley", "torsions", "impropers", "harmonic_impropers",
    "cmap", "lj14", "coulomb14",
)  # fmt: skip


@dataclass
class Reference:
    """One stored OpenMM reference (kcal/mol, Å, kcal/mol/Å)."""

    name: str
    positions: torch.Tensor
    box: torch.Tensor | None
    energies: dict[str, float]
    forces: dict[str, np.ndarray]
    meta: dict

    def state(self, dtype: torch.dtype = torch.float64, periodic: bool = True) -> State:
        box = self.box if periodic else None
        return State.from_coordinates(self.positions, box, dtype=dtype)

    @property
    def bonded_terms(self) -> list[str]:
        return [t for t in BONDED_TERMS if t in self.energies]


def load_reference(name: str) -> Reference:
    with np.load(REFERENCE / f"{name}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    energies = {k[7:]: float(v) for k, v in arrays.items() if k.startswith("energy_")}
    forces = {k[7:]: v for k, v in arrays.items() if k.startswith("forces_")}
    box = torch.as_tensor(arrays["box"]) if "box" in arrays else None
    return Reference(
        name, torch.as_tensor(arrays["positions"]), box, energies, forces, meta
    )


def load_system(name: str) -> System:
    topology, parameters = SYSTEMS[name]
    path = DATA / topology
    params = [DATA / p for p in parameters]
    if path.suffix == ".prmtop":
        return read_prmtop(path)
    if path.suffix == ".psf":
        return read_psf(path, params)
    from torchmd_plugins.amber.openmm_xml import read_openmm_xml

    return read_openmm_xml(path, params)


_CACHE: dict[str, System] = {}


def cached_system(name: str) -> System:
    if name not in _CACHE:
        _CACHE[name] = load_system(name)
    return _CACHE[name]


def bonded(system: System, *terms: str) -> AmberBonded:
    config = AmberBonded.Config(terms=tuple(terms) if terms else None)
    return AmberBonded(config, system)


def data_path(relative: str) -> Path:
    return DATA / relative
