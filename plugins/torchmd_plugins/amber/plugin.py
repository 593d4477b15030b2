"""Hook implementations of the built-in amber plugin: the ``amber`` potential and the
topology/coordinate loaders. Heavy modules are imported inside the hooks."""

from __future__ import annotations

from collections.abc import Callable

from torchmd_core import hookimpl


@hookimpl
def torchmd_core_register_potentials(register: Callable[[type], None]) -> None:
    from torchmd_plugins.amber.bonded import AmberBonded

    register(AmberBonded)


@hookimpl
def torchmd_core_register_loaders(register: Callable[[type], None]) -> None:
    from torchmd_plugins.amber import coordinates, gromacs, openmm_xml, prmtop, psf

    register(prmtop.PrmtopLoader)
    register(psf.PsfLoader)
    register(openmm_xml.OpenMMXmlLoader)
    register(gromacs.GromacsTopLoader)
    for cls in (
        coordinates.PdbLoader,
        coordinates.CifLoader,
        coordinates.AmberRestartLoader,
        coordinates.CharmmCrdLoader,
        coordinates.NamdCoorLoader,
        coordinates.MdtrajFrameLoader,
    ):
        register(cls)
