"""The benchmark cases of issue 8: what is simulated, with which settings.

Every case is Langevin dynamics at 300 K with a friction of 1/ps. Periodic cases use
a 9 Å cutoff, LJ switched from 7.5 Å, reaction-field electrostatics (ε_rf = 78.3) and
no dispersion correction; the vacuum case has no cutoff (plain Coulomb, all pairs).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CASES", "QUICK", "SETTINGS", "Case", "select"]

#: Physics shared by every engine and case (units: Å, K, 1/ps).
SETTINGS = {
    "cutoff_A": 9.0,
    "switch_A": 7.5,
    "reaction_field_dielectric": 78.3,
    "temperature_K": 300.0,
    "friction_per_ps": 1.0,
}


@dataclass(frozen=True)
class Case:
    """One benchmark: a structure, a time step and how it is constrained.

    Attributes:
        name: command-line name (``--systems``).
        structure: the prepared input it runs (see :mod:`perf.prepare`).
        label: what the tables call it.
        n_atoms: atoms per replica (before preparation: the nominal size).
        timestep_fs: integration step.
        constraints: ``none`` or ``hbonds`` (bonds to hydrogen, with rigid water).
        replicas: independent copies run together (OpenMM: one context each, in turn).
        periodic: cutoff + reaction field in a box (else vacuum, no cutoff).
        scaling: a point of the steps/s-against-atoms curve.
    """

    name: str
    structure: str
    label: str
    n_atoms: int
    timestep_fs: float = 1.0
    constraints: str = "none"
    replicas: int = 1
    periodic: bool = True
    scaling: bool = True

    @property
    def rigid(self) -> bool:
        return self.constraints != "none"


CASES: tuple[Case, ...] = (
    Case("ala2_solvated", "ala2_solvated", "alanine dipeptide in water", 688),
    Case("dhfr_1fs", "dhfr", "DHFR, 1 fs flexible", 23558),
    Case(
        "dhfr_2fs",
        "dhfr",
        "DHFR, 2 fs hbonds + rigid water",
        23558,
        timestep_fs=2.0,
        constraints="hbonds",
        scaling=False,
    ),
    *(
        Case(f"water_{n // 1000}k", f"water_{n}", f"TIP3P water, {n // 1000}k atoms", n)
        for n in (1000, 3000, 10000, 30000, 100000)
    ),
    Case(
        "ala2_vacuum_x64",
        "ala2_vacuum",
        "64 × alanine dipeptide in vacuum",
        22,
        replicas=64,
        periodic=False,
        scaling=False,
    ),
)

#: The smoke run of ``--quick``: small systems only.
QUICK = ("ala2_solvated", "water_1k", "ala2_vacuum_x64")


def select(names: str | None, quick: bool) -> list[Case]:
    """The cases named in a comma-separated list (all, or the quick set, if None).

    Raises:
        SystemExit: an unknown name, with the known ones.
    """
    by_name = {c.name: c for c in CASES}
    if names is None:
        wanted = list(QUICK) if quick else list(by_name)
    else:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise SystemExit(
            f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(by_name)}"
        )
    return [by_name[n] for n in wanted]
