"""CHARMM parameter files (``prm``/``par``, ``rtf``/``top``, ``str``, ``inp``).

Read with the semantics of OpenMM's ``CharmmParameterSet`` (which the acceptance
checks compare with), not parmed's, because the two differ in ways that change
energies: parmed matches impropers in any atom order and truncates type names, and
a dihedral redefined by a later file replaces only the terms of equal periodicity in
OpenMM. The rules, in brief:

- ``!`` starts a comment; a line ending in ``-`` continues on the next; case is ignored.
- Files are read in OpenMM's order whatever the order given: topologies (MASS lines),
  then parameter files, then stream files (their ``read rtf``/``read para`` sections).
- Bonds, angles (with optional Urey-Bradley), impropers and CMAPs: a later definition
  replaces an earlier one. Dihedrals are multi-term: a term replaces an earlier term of
  the same periodicity for the same four types, otherwise it is added.
- ``NONBONDED``: ε, Rmin/2 and optional 1-4 ε, Rmin/2; ``nbxmod`` and ``e14fac``
  from the section header. ``NBFIX``: pair Emin, Rmin (and 1-4 values), applied only
  between types already defined when the NBFIX line is read.
- Lines ``!MASS ...`` (a commented-out MASS, as in some generated ligand files) are
  kept as a fallback for atom types no MASS line defines.

Energies are kcal/mol, lengths Å, angles as written (degrees).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TypeVar

from torchmd_core import InputFileError

__all__ = ["CharmmParameterSet", "LJType", "MassType", "match_with_wildcards"]

T = TypeVar("T")
Key4 = tuple[str, str, str, str]


@dataclass
class MassType:
    """An atom type from a MASS line."""

    name: str
    number: int
    mass: float
    element: str | None


@dataclass
class LJType:
    """Lennard-Jones parameters of one atom type, as written (ε ≤ 0 in CHARMM files)."""

    epsilon: float
    rmin_half: float
    epsilon14: float
    rmin14_half: float


@dataclass
class CharmmParameterSet:
    """All parameters read from a list of CHARMM files (see the module docstring)."""

    mass_types: dict[str, MassType] = field(default_factory=dict)
    type_numbers: dict[int, str] = field(default_factory=dict)
    commented_masses: dict[str, MassType] = field(default_factory=dict)
    bonds: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    angles: dict[tuple[str, str, str], tuple[float, float]] = field(
        default_factory=dict
    )
    urey_bradley: dict[tuple[str, str, str], tuple[float, float] | None] = field(
        default_factory=dict
    )
    dihedrals: dict[Key4, list[tuple[float, int, float]]] = field(default_factory=dict)
    impropers: dict[Key4, tuple[float, float]] = field(default_factory=dict)
    cmaps: dict[tuple[str, ...], tuple[int, list[float]]] = field(default_factory=dict)
    lj: dict[str, LJType] = field(default_factory=dict)
    nbfix: dict[tuple[str, str], tuple[float, float, float, float]] = field(
        default_factory=dict
    )
    nbxmod: int = 5
    e14fac: float = 1.0
    files: list[str] = field(default_factory=list)

    @classmethod
    def from_files(cls, paths: Sequence[Path]) -> CharmmParameterSet:
        """Read topology, parameter and stream files in OpenMM's order."""
        tops: list[Path] = []
        pars: list[Path] = []
        strs: list[Path] = []
        for path in paths:
            kind = file_kind(path)
            {"rtf": tops, "par": pars, "str": strs}[kind].append(path)
        params = cls()
        for path in tops:
            params.read_topology(_Lines.from_file(path))
        for path in pars:
            params.read_parameters(_Lines.from_file(path))
        for path in strs:
            params.read_stream(path)
        params.files = [str(p) for p in (*tops, *pars, *strs)]
        return params

    # -- topology (MASS lines) ---------------------------------------------------------
    def read_topology(self, lines: _Lines) -> None:
        for number, line in lines:
            line = line.strip().upper()
            if line[:4] == "MASS":
                self._mass(line, lines.where(number))

    def _mass(self, line: str, where: str) -> None:
        words = line.split()
        try:
            atom_type = MassType(
                words[2],
                int(words[1]),
                float(words[3]),
                words[4] if len(words) > 4 else None,
            )
        except (IndexError, ValueError):
            raise InputFileError(
                f"{where}: cannot read MASS line {line!r} "
                "(expected MASS number type mass [element])"
            ) from None
        self.mass_types[atom_type.name] = atom_type
        self.type_numbers[atom_type.number] = atom_type.name

    # -- parameter files ---------------------------------------------------------------
    def read_parameters(self, lines: _Lines) -> None:
        for name, mass in lines.commented_masses.items():
            self.commented_masses.setdefault(name, mass)
        section: str | None = None
        previous = ""
        cmap_key: tuple[str, ...] | None = None
        cmap_size = 0
        cmap_data: list[float] = []
        read_first_nonbonded = False
        for number, raw in lines:
            line = (previous + raw.strip()).upper()
            previous = ""
            if line.endswith("-"):
                previous = line[:-1]
                continue
            if not line:
                continue
            where = lines.where(number)
            is_header, header = _section_header(line)
            if is_header:
                if cmap_key is not None:
                    self._finish_cmap(cmap_key, cmap_size, cmap_data, where)
                    cmap_key = None
                section = header
                if header == "NONBONDED":
                    read_first_nonbonded = False
                    self._nonbonded_options(line.split(), where)
                continue
            if section is None:
                continue
            words = line.split()
            if section == "ATOMS":
                if line.startswith("MASS"):
                    self._mass(line, where)
            elif section == "BONDS":
                t1, t2, k, r0 = _fields(words, (str, str, float, float), where, "bond")
                self.bonds[(min(t1, t2), max(t1, t2))] = (k, r0)
            elif section == "ANGLES":
                t1, t2, t3, k, theta0 = _fields(
                    words, (str, str, str, float, float), where, "angle"
                )
                key = (min(t1, t3), t2, max(t1, t3))
                self.angles[key] = (k, theta0)
                ub = None
                if len(words) > 6:
                    ub_k, ub_r0 = _fields(
                        words[5:7], (float, float), where, "Urey-Bradley"
                    )
                    ub = (ub_k, ub_r0)
                self.urey_bradley[key] = ub
            elif section == "DIHEDRALS":
                *types, k, n, phase = _fields(
                    words, (str, str, str, str, float, float, float), where, "dihedral"
                )
                self._add_dihedral(_canonical4(types), (k, int(n), phase))
            elif section == "IMPROPER":
                *types, k, psi0 = _fields(
                    words, (str, str, str, str, float, float), where, "improper"
                )
                if (
                    len(words) > 6
                ):  # k, multiplicity, psi0: OpenMM takes the last as psi0
                    psi0 = _fields(words[6:7], (float,), where, "improper")[0]
                self.impropers[_canonical4(types)] = (k, psi0)
            elif section == "CMAP":
                try:
                    cmap_data.extend([float(w) for w in words])
                except ValueError:
                    if cmap_key is not None:
                        self._finish_cmap(cmap_key, cmap_size, cmap_data, where)
                    types = words[:8]
                    if len(words) < 9:
                        raise InputFileError(
                            f"{where}: cannot read CMAP header {line!r}"
                        ) from None
                    cmap_size = _fields(words[8:9], (int,), where, "CMAP resolution")[0]
                    cmap_key = cmap_type_key(types)
                    cmap_data = []
            elif section == "NONBONDED":
                try:
                    epsilon, rmin = float(words[2]), float(words[3])
                except (IndexError, ValueError):
                    if not read_first_nonbonded:
                        continue  # option lines before the first type
                    raise InputFileError(
                        f"{where}: cannot read NONBONDED line {line!r}"
                    ) from None
                read_first_nonbonded = True
                eps14, rmin14 = epsilon, rmin
                if len(words) > 6:
                    eps14, rmin14 = _fields(
                        words[5:7], (float, float), where, "1-4 Lennard-Jones"
                    )
                self.lj[words[0]] = LJType(epsilon, rmin, eps14, rmin14)
            elif section == "NBFIX":
                t1, t2, emin, rmin = _fields(
                    words, (str, str, float, float), where, "NBFIX"
                )
                emin14, rmin14 = abs(emin), rmin
                if len(words) > 5:
                    emin14, rmin14 = _fields(
                        words[4:6], (float, float), where, "NBFIX 1-4"
                    )
                    emin14 = abs(emin14)
                if self._known(t1) and self._known(t2):
                    self.nbfix[(min(t1, t2), max(t1, t2))] = (
                        rmin,
                        abs(emin),
                        rmin14,
                        emin14,
                    )
        if cmap_key is not None:
            self._finish_cmap(cmap_key, cmap_size, cmap_data, lines.where(None))

    def _known(self, name: str) -> bool:
        return name in self.mass_types or name in self.lj

    def _nonbonded_options(self, words: list[str], where: str) -> None:
        for option, convert in (("NBXMOD", int), ("E14FAC", float)):
            if option in words:
                try:
                    value = convert(words[words.index(option) + 1])
                except (IndexError, ValueError):
                    raise InputFileError(
                        f"{where}: cannot read the {option} value"
                    ) from None
                if option == "NBXMOD":
                    if not -5 <= int(value) <= 5:
                        raise InputFileError(
                            f"{where}: NBXMOD must be within -5..5, got {value}"
                        )
                    self.nbxmod = int(value)
                else:
                    self.e14fac = float(value)

    def _add_dihedral(self, key: Key4, term: tuple[float, int, float]) -> None:
        terms = self.dihedrals.setdefault(key, [])
        for i, old in enumerate(terms):
            if old[1] == term[1]:
                terms[i] = term
                return
        terms.append(term)

    def _finish_cmap(
        self, key: tuple[str, ...], size: int, data: list[float], where: str
    ) -> None:
        if size <= 0 or len(data) != size * size:
            raise InputFileError(
                f"{where}: CMAP {'-'.join(key)} has {len(data)} values for a "
                f"{size}x{size} grid; the parameter file is truncated or malformed"
            )
        self.cmaps[key] = (size, list(data))

    # -- stream files ------------------------------------------------------------------
    def read_stream(self, path: Path) -> None:
        lines = _Lines.from_file(path)
        section: list[tuple[int, str]] | None = None
        title = ""
        for number, line in lines:
            stripped = line.strip()
            if section is None:
                if stripped[:4].lower() == "read":
                    section, title = [], stripped
                continue
            if stripped.lower().startswith("end"):
                words = title.lower().split()
                sub = _Lines(lines.path, section, lines.commented_masses)
                if len(words) > 1 and words[1] == "rtf":
                    self.read_topology(sub)
                elif len(words) > 1 and words[1].startswith("para"):
                    self.read_parameters(sub)
                section = None
                continue
            section.append((number, line))

    # -- look-ups ----------------------------------------------------------------------
    def dihedral_terms(
        self, types: Sequence[str]
    ) -> tuple[Key4, list[tuple[float, int, float]]] | None:
        return match_with_wildcards(types, self.dihedrals)

    def improper(self, types: Sequence[str]) -> tuple[Key4, tuple[float, float]] | None:
        return match_with_wildcards(types, self.impropers)


def match_with_wildcards(
    types: Sequence[str], table: dict[Key4, T]
) -> tuple[Key4, T] | None:
    """The parameters of a dihedral or improper, OpenMM's way: the exact types, then
    with 1, 2 and 3 wildcards ``X`` in every combination of positions (in
    ``itertools.combinations`` order), each in either direction. None if nothing
    matches."""
    for count in range(4):
        for positions in combinations(range(4), count):
            key = list(types)
            for p in positions:
                key[p] = "X"
            candidate = min(tuple(key), tuple(reversed(key)))
            if candidate in table:
                return candidate, table[candidate]
    return None


def cmap_type_key(types: Sequence[str]) -> tuple[str, ...]:
    """Key of a CMAP from its 8 types: each torsion in its smaller direction."""
    first, second = list(types[:4]), list(types[4:8])
    return tuple(min(first, first[::-1]) + min(second, second[::-1]))


def _canonical4(types: Sequence[str]) -> Key4:
    t = tuple(types)
    key = min(t, t[::-1])
    return key  # type: ignore[return-value]


_HEADERS = (
    ("ATOM", "ATOMS"),
    ("BOND", "BONDS"),
    ("ANGL", "ANGLES"),
    ("THET", "ANGLES"),
    ("DIHE", "DIHEDRALS"),
    ("PHI", "DIHEDRALS"),
    ("IMPR", "IMPROPER"),
    ("IMPH", "IMPROPER"),
    ("CMAP", "CMAP"),
    ("NONB", "NONBONDED"),
    ("NBON", "NONBONDED"),
    ("NBFIX", "NBFIX"),
    ("THOLE", "THOLE"),
    ("HBOND", None),
    ("END", None),
)


def _section_header(line: str) -> tuple[bool, str | None]:
    """(True, section) for a section header line (section None: skip until the next)."""
    for prefix, section in _HEADERS:
        if line.startswith(prefix):
            return True, section
    return False, None


def _fields(words: Sequence[str], kinds: Sequence[type], where: str, what: str) -> list:  # type: ignore[type-arg]
    if len(words) < len(kinds):
        raise InputFileError(
            f"{where}: cannot read {what} parameters from {' '.join(words)!r}: "
            "too few fields"
        )
    try:
        return [kind(w) for kind, w in zip(kinds, words, strict=False)]
    except ValueError:
        raise InputFileError(
            f"{where}: cannot read {what} parameters from {' '.join(words)!r}: "
            "a number is malformed"
        ) from None


def file_kind(path: Path) -> str:
    """'rtf', 'par' or 'str' for a CHARMM file name, as OpenMM decides it."""
    name = path.name.lower()
    if name.endswith((".rtf", ".top")):
        return "rtf"
    if name.endswith((".par", ".prm")):
        return "par"
    if name.endswith(".str"):
        return "str"
    if name.endswith(".inp"):
        if "par" in name:
            return "par"
        if "top" in name:
            return "rtf"
    raise InputFileError(
        f"CHARMM parameter file '{path}': cannot tell its kind from the name; use "
        ".rtf/.top (topology), .prm/.par (parameters), .str (stream), or .inp with "
        "'par' or 'top' in the name"
    )


_COMMENTED_MASS = re.compile(
    r"^\s*!\s*MASS\s+(-?\d+)\s+(\S+)\s+([-+0-9.eE]+)(?:\s+([A-Za-z]{1,2})\b)?",
    re.IGNORECASE,
)


class _Lines:
    """The lines of a CHARMM file with comments (``!``) removed, numbered from 1."""

    def __init__(
        self,
        path: Path,
        lines: list[tuple[int, str]],
        commented_masses: dict[str, MassType],
    ) -> None:
        self.path = path
        self.lines = lines
        self.commented_masses = commented_masses

    @classmethod
    def from_file(cls, path: Path) -> _Lines:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            raise InputFileError(
                f"cannot read CHARMM file '{path}': {err.strerror}"
            ) from None
        lines, masses = [], {}
        for number, line in enumerate(text.splitlines(), start=1):
            match = _COMMENTED_MASS.match(line)
            if match:
                number_, name, mass, element = match.groups()
                masses[name.upper()] = MassType(
                    name.upper(), int(number_), float(mass), element
                )
            lines.append((number, line.split("!", 1)[0]))
        return cls(path, lines, masses)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self.lines)

    def where(self, number: int | None) -> str:
        return f"'{self.path}'" + (f" line {number}" if number is not None else "")
