"""The one unit system of torchmd-core, and the conversions used at its edges.

Internal units: energy kcal/mol, length Å, mass amu (g/mol), charge e, temperature K,
time ps (timesteps are configured in fs), velocity Å/ps, force kcal/mol/Å,
pressure kcal/mol/Å³ internally (configured in bar).

Physical constants follow OpenMM (CODATA 2018 as OpenMM 8 uses them), so that energies
agree with OpenMM to the last digit that matters.
"""

from __future__ import annotations

import math

#: kJ → kcal (thermochemical calorie).
KJ_TO_KCAL = 1.0 / 4.184
KCAL_TO_KJ = 4.184
NM_TO_ANGSTROM = 10.0
ANGSTROM_TO_NM = 0.1
FS_TO_PS = 1.0e-3
EV_TO_KCAL_MOL = 23.060547830619029  # 1 eV · N_A in kcal/mol (CODATA 2018)
HARTREE_TO_KCAL_MOL = 627.5094740631
BOHR_TO_ANGSTROM = 0.529177210903

#: Molar gas constant R = k_B · N_A in kcal/mol/K (OpenMM's value).
BOLTZMANN_KCAL_MOL_K = 8.31446261815324e-3 * KJ_TO_KCAL
AVOGADRO = 6.02214076e23

#: Coulomb constant 1/(4πε0) in kcal/mol·Å/e² (332.0637133), computed exactly as
#: OpenMM 8's ONE_4PI_EPS0 (138.93545764438198 kJ/mol·nm/e²) from CODATA 2018 ε0, e
#: and N_A. The rounded 138.935456 differs by 1.2e-8 relative, visible in large sums.
_EPSILON0_E2_MOL_PER_KJ_NM = 1.0e-6 * 8.8541878128e-12 / (1.602176634e-19**2 * AVOGADRO)
ONE_4PI_EPS0_KJ_MOL_NM = 1.0 / (4.0 * math.pi * _EPSILON0_E2_MOL_PER_KJ_NM)
COULOMB_KCAL_MOL_A = ONE_4PI_EPS0_KJ_MOL_NM * KJ_TO_KCAL * NM_TO_ANGSTROM

#: Kinetic energy of 1 amu moving at 1 Å/ps, in kcal/mol:
#: (1e-3 kg/mol)(100 m/s)² / 4184.
AMU_A2_PS2_TO_KCAL_MOL = 10.0 / 4184.0

#: Acceleration per unit force over mass: (kcal/mol/Å)/amu → Å/ps².
KCAL_MOL_A_AMU_TO_A_PS2 = 1.0 / AMU_A2_PS2_TO_KCAL_MOL

#: 1 bar in kcal/mol/Å³: 1e5 Pa · 1e-30 m³/Å³ · N_A / 4184 J/kcal.
BAR_TO_KCAL_MOL_A3 = 1.0e5 * 1.0e-30 * AVOGADRO / 4184.0

#: amu/Å³ → g/cm³.
AMU_A3_TO_G_CM3 = 1.0e24 / AVOGADRO


def kT(temperature_K: float) -> float:
    """Thermal energy k_B·T in kcal/mol."""
    return BOLTZMANN_KCAL_MOL_K * temperature_K


def ns_per_day(steps_per_second: float, timestep_fs: float) -> float:
    """Simulated nanoseconds per wall-clock day."""
    return steps_per_second * timestep_fs * 1.0e-6 * 86400.0


def degrees_to_radians(angle: float) -> float:
    return angle * math.pi / 180.0
