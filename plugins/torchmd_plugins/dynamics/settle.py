"""SETTLE: rigid three-site waters, analytically, for all waters and replicas at once.

Positions (Miyamoto & Kollman, J. Comput. Chem. 13, 952 (1992)): the constrained
water is the ideal triangle centred on the unconstrained centre of mass, tilted so
that every atom keeps its displacement normal to the previous molecular plane, and
turned about that normal so that the displacements exert no torque about the previous
geometry; together this is the exact solution of the SHAKE equations for constraint
forces along the previous bonds. Velocities: the three bond-parallel relative
velocities are removed by an exact 3x3 solve per water (RATTLE's second half).

Both kernels return corrections (displacement, velocity change) and leave waters that
already satisfy the tolerance untouched, so constraining twice changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from torchmd_core import TopologyError
from torchmd_core.geometry import minimum_image
from torchmd_plugins.dynamics.native import load_native, use_native

__all__ = ["WaterGeometry", "settle_positions", "settle_velocities"]


@dataclass(frozen=True)
class WaterGeometry:
    """A rigid water model: masses and the canonical triangle about its centre of mass.

    In the canonical frame O is at (0, ra, 0) and the hydrogens at (∓rc, −rb, 0).
    """

    m_o: float
    m_h: float
    d_oh: float
    d_hh: float

    @classmethod
    def of(
        cls, waters: Tensor, masses: Tensor, distances: tuple[float, float]
    ) -> WaterGeometry:
        """The geometry shared by all ``waters`` (W, 3) (O, H1, H2).

        Raises:
            TopologyError: waters differ in masses, hydrogens differ in mass, or the
                distances do not make a triangle.
        """
        m = masses.to(torch.float64)[waters]  # (W, 3)
        m_o, m_h = float(m[0, 0]), float(m[0, 1])
        if bool((m <= 0).any()) or not torch.allclose(m[:, 1], m[:, 2]):
            raise TopologyError(
                "rigid water (SETTLE) needs both hydrogens of a water to have the "
                "same, non-zero mass; set rigid_water: false or use hydrogen_mass "
                "only on solutes"
            )
        if not (
            torch.allclose(m[:, 0], m[:1, 0].expand(len(m)))
            and torch.allclose(m[:, 1], m[:1, 1].expand(len(m)))
        ):
            raise TopologyError(
                "rigid waters have different masses; SETTLE needs one water model "
                "(or set rigid_water: false)"
            )
        d_oh, d_hh = (float(d) for d in distances)
        if not (d_oh > 0 and 0 < d_hh < 2 * d_oh):
            raise TopologyError(
                f"rigid water distances O-H {d_oh} Å, H-H {d_hh} Å do not make a "
                "triangle"
            )
        return cls(m_o, m_h, d_oh, d_hh)

    @property
    def rc(self) -> float:
        return 0.5 * self.d_hh

    @property
    def ra(self) -> float:
        height = math.sqrt(self.d_oh**2 - self.rc**2)
        return 2.0 * self.m_h * height / (self.m_o + 2.0 * self.m_h)

    @property
    def rb(self) -> float:
        return math.sqrt(self.d_oh**2 - self.rc**2) - self.ra


def settle_positions(
    positions: Tensor,
    reference: Tensor,
    waters: Tensor,
    geo: WaterGeometry,
    tolerance: float,
    box: Tensor | None = None,
) -> Tensor:
    """(R, N, 3) displacement making every water of ``positions`` rigid.

    Args:
        positions: (R, N, 3) unconstrained positions, Å.
        reference: (R, N, 3) previous positions, rigid waters, Å.
        waters: (W, 3) (O, H1, H2) atom indices.
        geo: the water model.
        tolerance: relative distance tolerance under which a water is left as it is.
        box: (R, 3, 3) or None; intramolecular vectors use the minimum image.
    """
    if use_native(positions, reference, *(() if box is None else (box,))):
        kernels = load_native()
        assert kernels is not None
        out: Tensor = kernels.settle_positions(
            positions, reference.to(positions.dtype), waters,
            None if box is None else box.to(positions.dtype),
            geo.m_o, geo.m_h, geo.ra, geo.rb, geo.rc, geo.d_oh, geo.d_hh, tolerance,
        )  # fmt: skip
        return out
    o, h1, h2 = waters[:, 0], waters[:, 1], waters[:, 2]
    wbox = None if box is None else box[:, None]
    # Everything relative to the old oxygen (hydrogens' old vectors by minimum image)
    # and in displacements, so the result is accurate whatever the coordinates' size.
    b0 = minimum_image(reference[:, h1] - reference[:, o], wbox)  # (R, W, 3)
    c0 = minimum_image(reference[:, h2] - reference[:, o], wbox)
    p_a = positions[:, o] - reference[:, o]
    p_b = positions[:, h1] - reference[:, h1]
    p_c = positions[:, h2] - reference[:, h2]
    total = geo.m_o + 2.0 * geo.m_h
    com = (geo.m_o * p_a + geo.m_h * (b0 + p_b) + geo.m_h * (c0 + p_c)) / total
    a1, b1, c1 = p_a - com, b0 + p_b - com, c0 + p_c - com
    # Frame: z normal to the old plane, x perpendicular to a1 and z.
    ez = _unit(torch.linalg.cross(b0, c0))
    ex = _unit(torch.linalg.cross(a1, ez))
    ey = torch.linalg.cross(ez, ex)

    def local(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return _dot(v, ex), _dot(v, ey), _dot(v, ez)

    xb0, yb0, _ = local(b0)
    xc0, yc0, _ = local(c0)
    _, _, za1 = local(a1)
    xb1, yb1, zb1 = local(b1)
    xc1, yc1, zc1 = local(c1)
    ra, rb, rc = geo.ra, geo.rb, geo.rc
    # Tilts that keep each atom's height above the old plane.
    sin_phi = (za1 / ra).clamp(-1.0, 1.0)
    cos_phi = (1.0 - sin_phi.square()).clamp(min=0.0).sqrt()
    sin_psi = ((zb1 - zc1) / (2.0 * rc * cos_phi)).clamp(-1.0, 1.0)
    cos_psi = (1.0 - sin_psi.square()).clamp(min=0.0).sqrt()
    ya2 = ra * cos_phi
    xb2 = -rc * cos_psi
    t1, t2 = -rb * cos_phi, rc * sin_psi * sin_phi
    yb2, yc2 = t1 - t2, t1 + t2
    # The turn about z with no torque about the old geometry: α sinθ + β cosθ = γ.
    alpha = xb2 * (xb0 - xc0) + yb0 * yb2 + yc0 * yc2
    beta = xb2 * (yc0 - yb0) + xb0 * yb2 + xc0 * yc2
    gamma = xb0 * yb1 - xb1 * yb0 + xc0 * yc1 - xc1 * yc0
    ab2 = alpha.square() + beta.square()
    sin_t = (alpha * gamma - beta * (ab2 - gamma.square()).clamp(min=0.0).sqrt()) / ab2
    cos_t = (1.0 - sin_t.square()).clamp(min=0.0).sqrt()

    def lab(x: Tensor, y: Tensor, z: Tensor) -> Tensor:
        out: Tensor = x[..., None] * ex + y[..., None] * ey + z[..., None] * ez
        return out

    a3 = lab(-ya2 * sin_t, ya2 * cos_t, za1)
    b3 = lab(xb2 * cos_t - yb2 * sin_t, xb2 * sin_t + yb2 * cos_t, zb1)
    c3 = lab(-xb2 * cos_t - yc2 * sin_t, -xb2 * sin_t + yc2 * cos_t, zc1)
    d_oh2, d_hh2 = geo.d_oh**2, geo.d_hh**2
    ok = (
        ((_dot(b1 - a1, b1 - a1) - d_oh2).abs() <= 2.0 * tolerance * d_oh2)
        & ((_dot(c1 - a1, c1 - a1) - d_oh2).abs() <= 2.0 * tolerance * d_oh2)
        & ((_dot(c1 - b1, c1 - b1) - d_hh2).abs() <= 2.0 * tolerance * d_hh2)
    )[..., None]
    zero = torch.zeros_like(a1)
    out = torch.zeros_like(positions)
    out = out.index_copy(1, o, torch.where(ok, zero, a3 - a1))
    out = out.index_copy(1, h1, torch.where(ok, zero, b3 - b1))
    return out.index_copy(1, h2, torch.where(ok, zero, c3 - c1))


def settle_velocities(
    velocities: Tensor,
    positions: Tensor,
    waters: Tensor,
    geo: WaterGeometry,
    tolerance: float,
    box: Tensor | None = None,
) -> Tensor:
    """(R, N, 3) velocity change that makes every water move rigidly.

    With constraints c = (O,H1), (O,H2), (H1,H2), vectors r_c = first − second atom,
    and impulses μ_c r_c (+ on the first atom, − on the second, divided by mass),
    K μ = −(r_c · v_rel,c) with K = C M⁻¹ Cᵀ, solved exactly. ``positions`` must
    hold rigid waters.
    """
    if use_native(velocities, positions, *(() if box is None else (box,))):
        kernels = load_native()
        assert kernels is not None
        dv: Tensor = kernels.settle_velocities(
            velocities, positions.to(velocities.dtype), waters,
            None if box is None else box.to(velocities.dtype),
            geo.m_o, geo.m_h, tolerance,
        )  # fmt: skip
        return dv
    o, h1, h2 = waters[:, 0], waters[:, 1], waters[:, 2]
    wbox = None if box is None else box[:, None]
    r1 = minimum_image(positions[:, o] - positions[:, h1], wbox)
    r2 = minimum_image(positions[:, o] - positions[:, h2], wbox)
    r3 = minimum_image(positions[:, h1] - positions[:, h2], wbox)
    io, ih = 1.0 / geo.m_o, 1.0 / geo.m_h
    n1, n2, n3 = _dot(r1, r1), _dot(r2, r2), _dot(r3, r3)
    vo, vh1, vh2 = velocities[:, o], velocities[:, h1], velocities[:, h2]
    u1, u2, u3 = vo - vh1, vo - vh2, vh1 - vh2
    rhs = (-_dot(r1, u1), -_dot(r2, u2), -_dot(r3, u3))
    m1, m2, m3 = _solve_sym3(
        (io + ih) * n1,
        (io + ih) * n2,
        2.0 * ih * n3,
        io * _dot(r1, r2),
        -ih * _dot(r1, r3),
        ih * _dot(r2, r3),
        rhs,
    )
    ok = (
        (rhs[0].abs() <= tolerance * (n1 * _dot(u1, u1)).sqrt())
        & (rhs[1].abs() <= tolerance * (n2 * _dot(u2, u2)).sqrt())
        & (rhs[2].abs() <= tolerance * (n3 * _dot(u3, u3)).sqrt())
    )
    zero = torch.zeros_like(m1)
    m1, m2, m3 = (torch.where(ok, zero, m)[..., None] for m in (m1, m2, m3))
    g1, g2, g3 = m1 * r1, m2 * r2, m3 * r3
    out = torch.zeros_like(velocities)
    out = out.index_copy(1, o, io * (g1 + g2))
    out = out.index_copy(1, h1, ih * (g3 - g1))
    return out.index_copy(1, h2, -ih * (g2 + g3))


def _dot(u: Tensor, v: Tensor) -> Tensor:
    return (u * v).sum(-1)


def _unit(v: Tensor) -> Tensor:
    out: Tensor = v / v.norm(dim=-1, keepdim=True)
    return out


def _solve_sym3(
    k11: Tensor,
    k22: Tensor,
    k33: Tensor,
    k12: Tensor,
    k13: Tensor,
    k23: Tensor,
    rhs: tuple[Tensor, Tensor, Tensor],
) -> tuple[Tensor, Tensor, Tensor]:
    """Solve the symmetric 3x3 systems K μ = rhs elementwise (adjugate/determinant)."""
    c11 = k22 * k33 - k23 * k23
    c12 = k13 * k23 - k12 * k33
    c13 = k12 * k23 - k13 * k22
    c22 = k11 * k33 - k13 * k13
    c23 = k12 * k13 - k11 * k23
    c33 = k11 * k22 - k12 * k12
    det = k11 * c11 + k12 * c12 + k13 * c13
    b1, b2, b3 = rhs
    return (
        (c11 * b1 + c12 * b2 + c13 * b3) / det,
        (c12 * b1 + c22 * b2 + c23 * b3) / det,
        (c13 * b1 + c23 * b2 + c33 * b3) / det,
    )
