"""Numerical checks of the OpenMM conventions written down in README.md.

Each check builds a tiny System, evaluates it on the Reference platform in double
precision and compares with a formula written here independently. make_reference.py
runs ``check_all()`` before writing any reference, so a new OpenMM version that changed
one of these conventions stops the regeneration instead of silently changing the data.

Run alone (from the repository root) to print the measured constants and deviations:

    python tests/reference/check_conventions.py

Internal units are OpenMM's (nm, kJ/mol, e); results are reported in kcal/mol and Å too.
"""

from __future__ import annotations

import math

import numpy as np
import openmm
import openmm.unit as unit

# As SimTKOpenMMRealType.h: EPSILON0 = 1e-6*8.8541878128e-12/(E_CHARGE^2*AVOGADRO),
# in e^2/(kJ/mol nm).
E_CHARGE, AVOGADRO, BOLTZMANN = 1.602176634e-19, 6.02214076e23, 1.380649e-23
EPSILON0 = 1e-6 * 8.8541878128e-12 / (E_CHARGE * E_CHARGE * AVOGADRO)
ONE_4PI_EPS0 = 1.0 / (4.0 * math.pi * EPSILON0)  # kJ/mol nm e^-2
BOLTZ = BOLTZMANN * AVOGADRO / 1000.0  # kJ/mol/K


def energy(system: openmm.System, positions, box=None, forces=False):
    context = openmm.Context(
        system,
        openmm.VerletIntegrator(1e-3),
        openmm.Platform.getPlatformByName("Reference"),
    )
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(np.asarray(positions, dtype=float))
    state = context.getState(getEnergy=True, getForces=forces)
    e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if forces:
        return e, np.asarray(state.getForces(asNumpy=True)._value)
    return e


def pair_system(
    q=(1.0, -0.5),
    sig=(0.3, 0.3),
    eps=(0.0, 0.0),
    method=0,
    cutoff=1.2,
    rf=78.3,
    switch=None,
    exception=None,
    box=3.0,
):
    system = openmm.System()
    nb = openmm.NonbondedForce()
    for qi, si, ei in zip(q, sig, eps, strict=True):
        system.addParticle(1.0)
        nb.addParticle(qi, si, ei)
    nb.setNonbondedMethod(method)
    nb.setCutoffDistance(cutoff)
    nb.setReactionFieldDielectric(rf)
    nb.setUseDispersionCorrection(False)
    if switch is not None:
        nb.setUseSwitchingFunction(True)
        nb.setSwitchingDistance(switch)
    if exception is not None:
        nb.addException(0, 1, *exception)
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in np.eye(3) * box))
    system.addForce(nb)
    return system


def rf_energy(qq, r, rc, eps_rf):
    krf = rc**-3 * (eps_rf - 1) / (2 * eps_rf + 1)
    crf = 3 * eps_rf / (rc * (2 * eps_rf + 1))
    return ONE_4PI_EPS0 * qq * (1 / r + krf * r * r - crf)


def switch_value(r, rs, rc):
    t = np.clip((r - rs) / (rc - rs), 0.0, 1.0)
    return 1 - 10 * t**3 + 15 * t**4 - 6 * t**5


def lj(r, sigma, eps):
    s6 = (sigma / r) ** 6
    return 4 * eps * (s6 * s6 - s6)


def assert_rel(got, want, tol, what):
    err = abs(got - want) / max(abs(want), 1e-300)
    assert err <= tol, f"{what}: got {got!r}, want {want!r} (rel err {err:.2e})"
    return err


def check_coulomb_constant() -> float:
    e = energy(pair_system(), [[0, 0, 0], [0.7, 0, 0]])
    assert_rel(e, ONE_4PI_EPS0 * -0.5 / 0.7, 1e-14, "Coulomb constant")
    return -e * 0.7 / 0.5


def check_reaction_field() -> None:
    for eps_rf in (78.3, 50.0):
        for method in (1, 2):  # CutoffNonPeriodic, CutoffPeriodic
            system = pair_system(method=method, rf=eps_rf)
            e = energy(system, [[0, 0, 0], [0.8, 0, 0]])
            assert_rel(e, rf_energy(-0.5, 0.8, 1.2, eps_rf), 1e-13, f"RF eps={eps_rf}")
            assert energy(system, [[0, 0, 0], [1.25, 0, 0]]) == 0.0, "beyond cutoff"
            # Periodic: minimum image (0.4 nm through the boundary of a 3 nm box).
            if method == 2:
                e = energy(system, [[0.1, 0, 0], [2.7, 0, 0]])
                assert_rel(e, rf_energy(-0.5, 0.4, 1.2, eps_rf), 1e-12, "RF periodic")


def check_exclusions_and_exceptions() -> None:
    # An excluded pair (chargeProd = eps = 0) gets no reaction-field term and there is
    # no self term.
    for method in (1, 2):
        system = pair_system(method=method, exception=(0.0, 0.1, 0.0))
        assert energy(system, [[0, 0, 0], [0.3, 0, 0]]) == 0.0
    # A 1-4 exception: plain Coulomb + LJ, no cutoff, no RF, no switch, not periodic.
    for method in (0, 1, 2):
        system = pair_system(method=method, switch=0.9, exception=(-0.25, 0.3, 0.4))
        e = energy(system, [[0.1, 0, 0], [2.9, 0, 0]])  # raw 2.8 nm, image 0.2 nm
        want = ONE_4PI_EPS0 * -0.25 / 2.8 + lj(2.8, 0.3, 0.4)
        assert_rel(e, want, 1e-13, f"1-4 exception, method {method}")


def check_switch() -> None:
    rs, rc = 0.8, 1.0
    for r in (0.75, 0.85, 0.95):
        system = pair_system(
            q=(0.0, 0.0), sig=(0.3, 0.4), eps=(0.5, 0.2), method=2, cutoff=rc, switch=rs
        )
        e = energy(system, [[0, 0, 0], [r, 0, 0]])
        want = lj(r, 0.35, math.sqrt(0.1)) * switch_value(r, rs, rc)
        assert_rel(e, want, 1e-13, f"switched LJ r={r}")
    # The switch acts on LJ only: the reaction-field Coulomb is unchanged.
    e = energy(pair_system(method=2, cutoff=rc, switch=rs), [[0, 0, 0], [0.95, 0, 0]])
    assert_rel(e, rf_energy(-0.5, 0.95, rc, 78.3), 1e-13, "Coulomb not switched")


def gauss(f, a, b, n=400):
    x, w = np.polynomial.legendre.leggauss(n)
    y = 0.5 * (b - a) * x + 0.5 * (b + a)
    return 0.5 * (b - a) * np.sum(w * f(y))


def tail_integral(u, rc, rs=None):
    """∫_rc^∞ u r² dr (+ ∫_rs^rc (1-S) u r² dr with a switch); x = rc/r for the tail."""
    value = gauss(lambda x: u(rc / x) * (rc / x) ** 2 * rc / x**2, 1e-9, 1.0)
    if rs is not None:
        value += gauss(lambda r: (1 - switch_value(r, rs, rc)) * u(r) * r * r, rs, rc)
    return value


def dispersion_formula(classes, counts, pair_u, rc, rs, volume):
    """(2π N²/V) Σ_{class pairs} n_ij ∫ u_ij r² dr / (N(N+1)/2), self pairs counted."""
    n = sum(counts)
    total = 0.0
    for a in range(len(classes)):
        for b in range(a, len(classes)):
            n_ab = counts[a] * (counts[a] + 1) / 2 if a == b else counts[a] * counts[b]
            total += n_ab * tail_integral(pair_u(classes[a], classes[b]), rc, rs)
    return 2 * math.pi * n * n / volume * total / (n * (n + 1) / 2)


def scattered_positions(n, box):
    rng = np.random.default_rng(7)
    return rng.uniform(0, box, size=(n, 3))


def check_dispersion_correction() -> None:
    classes, counts = [(0.30, 0.6), (0.25, 0.2), (0.10, 0.0)], [5, 3, 4]
    box, rc = 4.0, 1.0
    for rs in (None, 0.8):
        system = openmm.System()
        nb = openmm.NonbondedForce()
        for (sig, eps), count in zip(classes, counts, strict=True):
            for _ in range(count):
                system.addParticle(1.0)
                nb.addParticle(0.0, sig, eps)
        nb.setNonbondedMethod(2)
        nb.setCutoffDistance(rc)
        if rs is not None:
            nb.setUseSwitchingFunction(True)
            nb.setSwitchingDistance(rs)
        system.addForce(nb)
        system.setDefaultPeriodicBoxVectors(
            *(openmm.Vec3(*row) for row in np.eye(3) * box)
        )
        pos = scattered_positions(sum(counts), box)
        nb.setUseDispersionCorrection(True)
        e_on = energy(system, pos)
        nb.setUseDispersionCorrection(False)
        e_off = energy(system, pos)

        def pair_u(c1, c2):
            sigma, eps = 0.5 * (c1[0] + c2[0]), math.sqrt(c1[1] * c2[1])
            return lambda r: lj(r, sigma, eps)

        want = dispersion_formula(classes, counts, pair_u, rc, rs, box**3)
        assert_rel(e_on - e_off, want, 1e-10, f"NonbondedForce dispersion, switch={rs}")


def check_table_long_range_correction() -> float:
    """CustomNonbondedForce A/B table as written by AmberPrmtopFile/CharmmPsfFile."""
    a = np.array([[2.0e-3, 1.0e-3], [1.0e-3, 5.0e-4]])  # sqrt(kJ/mol) nm^6
    b = np.array([[2.0e-3, 1.5e-3], [1.5e-3, 4.0e-4]])  # kJ/mol nm^6
    counts, box, rc = [6, 4], 4.0, 1.0
    worst = 0.0
    for rs in (None, 0.8):
        system = openmm.System()
        force = openmm.CustomNonbondedForce(
            "(a/r6)^2-b/r6; r6=r^6; a=acoef(type1, type2); b=bcoef(type1, type2)"
        )
        force.addTabulatedFunction(
            "acoef", openmm.Discrete2DFunction(2, 2, a.T.ravel())
        )
        force.addTabulatedFunction(
            "bcoef", openmm.Discrete2DFunction(2, 2, b.T.ravel())
        )
        force.addPerParticleParameter("type")
        for t, count in enumerate(counts):
            for _ in range(count):
                system.addParticle(1.0)
                force.addParticle([t])
        force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
        force.setCutoffDistance(rc)
        if rs is not None:
            force.setUseSwitchingFunction(True)
            force.setSwitchingDistance(rs)
        system.addForce(force)
        system.setDefaultPeriodicBoxVectors(
            *(openmm.Vec3(*row) for row in np.eye(3) * box)
        )
        pos = scattered_positions(sum(counts), box)
        force.setUseLongRangeCorrection(True)
        e_on = energy(system, pos)
        force.setUseLongRangeCorrection(False)
        e_off = energy(system, pos)

        def pair_u(t1, t2):
            return lambda r: (a[t1, t2] / r**6) ** 2 - b[t1, t2] / r**6

        want = dispersion_formula([0, 1], counts, pair_u, rc, rs, box**3)
        # OpenMM integrates numerically (midpoint rule to 1e-5 relative change).
        worst = max(
            worst, assert_rel(e_on - e_off, want, 1e-4, f"table LRC, switch={rs}")
        )
    return worst


def place(a, b, c, bond, angle, torsion):
    """Atom d with |cd| = bond, angle bcd, dihedral abcd (radians)."""
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d2 = bond * np.array(
        [
            -math.cos(angle),
            math.sin(angle) * math.cos(torsion),
            math.sin(angle) * math.sin(torsion),
        ]
    )
    return c + d2[0] * bc + d2[1] * m + d2[2] * n


def chain(phi, psi):
    p = [
        np.array([1.0, 1.0, 0.0]),
        np.array([0.0, 0.0, 0.0]),
        np.array([1.5, 0.0, 0.0]),
    ]
    p.append(place(p[0], p[1], p[2], 1.5, 1.9, phi))
    p.append(place(p[1], p[2], p[3], 1.5, 1.9, psi))
    return np.array(p) * 0.1


def check_cmap_grid() -> None:
    size = 24
    rng = np.random.default_rng(3)
    grid = rng.normal(size=size * size)  # energy[i + size*j] at (phi_i, psi_j)
    system = openmm.System()
    for _ in range(5):
        system.addParticle(1.0)
    theta = openmm.CustomTorsionForce("theta")
    theta.addTorsion(0, 1, 2, 3)
    theta.setForceGroup(1)
    cmap = openmm.CMAPTorsionForce()
    cmap.addMap(size, grid)
    cmap.addTorsion(0, 0, 1, 2, 3, 1, 2, 3, 4)
    system.addForce(theta)
    system.addForce(cmap)
    context = openmm.Context(
        system,
        openmm.VerletIntegrator(1e-3),
        openmm.Platform.getPlatformByName("Reference"),
    )
    for i, j in ((3, 5), (22, 1), (12, 18), (0, 23)):
        phi, psi = 2 * math.pi * i / size, 2 * math.pi * j / size
        # Angles are signed in (-pi, pi]; the map starts at 0: -pi/12 is grid index 22.
        context.setPositions(
            chain(
                phi if phi <= math.pi else phi - 2 * math.pi,
                psi if psi <= math.pi else psi - 2 * math.pi,
            )
        )
        got_phi = (
            context.getState(getEnergy=True, groups={1}).getPotentialEnergy()._value
        )
        assert abs(math.remainder(got_phi - phi, 2 * math.pi)) < 1e-12, (got_phi, phi)
        e = context.getState(getEnergy=True, groups={0}).getPotentialEnergy()._value
        assert_rel(e, grid[i + size * j], 1e-10, f"CMAP node ({i}, {j})")


def check_all(verbose: bool = False) -> dict:
    k = check_coulomb_constant()
    check_reaction_field()
    check_exclusions_and_exceptions()
    check_switch()
    check_dispersion_correction()
    lrc_err = check_table_long_range_correction()
    check_cmap_grid()
    facts = {
        "ONE_4PI_EPS0 [kJ/mol nm e^-2]": k,
        "ONE_4PI_EPS0 [kcal/mol A e^-2]": k * 10.0 / 4.184,
        "BOLTZ [kJ/mol/K]": BOLTZ,
        "BOLTZ [kcal/mol/K]": BOLTZ / 4.184,
        "table long-range correction, max rel. deviation from exact integral": lrc_err,
    }
    if verbose:
        for name, value in facts.items():
            print(f"{name}: {value!r}")
    return facts


if __name__ == "__main__":
    check_all(verbose=True)
    print("all convention checks passed")
