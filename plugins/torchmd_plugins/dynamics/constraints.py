"""Constraint solving: SETTLE for rigid waters, CCMA for all other distance constraints.

:class:`ConstraintSolver` works on all constraints and all replicas at once (no loop
over atoms; iterative parts loop over iterations only):

- Rigid waters: :mod:`~torchmd_plugins.dynamics.settle` (analytic).
- Other constraints: CCMA (Eastman & Pande, J. Chem. Theory Comput. 6, 434 (2010)),
  i.e. SHAKE/RATTLE with all constraints updated together and the update mixed by the
  precomputed inverse coupling matrix of :mod:`~torchmd_plugins.dynamics.ccma`.
- Structures far from the constraint surface (an input file, a minimiser's start)
  and the rare step where CCMA does not converge are handled by damped Newton
  iterations whose linear systems are solved by conjugate gradients with the exact
  coupling matrix at the current geometry.

The solver returns *corrections* (displacements, velocity changes) rather than new
positions, so callers add small numbers to large ones once and velocities derived from
constraint displacements keep full precision.

Iterations stop per replica when every constraint of that replica is within the
tolerance, so a replica follows the same arithmetic alone or in a batch. On the CPU
convergence is checked every iteration. On an accelerator a check synchronises the
device, so CCMA there runs a learnt number of iterations and verifies convergence (one
synchronisation) every :attr:`ConstraintSolver.verify_every` calls, adding iterations
when it fell short.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import torch
from torch import Tensor

from torchmd_core import Constraints, System, TopologyError
from torchmd_core.geometry import minimum_image
from torchmd_plugins.dynamics.ccma import angle_table, coupling_inverse
from torchmd_plugins.dynamics.native import load_native, use_native
from torchmd_plugins.dynamics.settle import (
    WaterGeometry,
    settle_positions,
    settle_velocities,
)

__all__ = ["ConstraintSolver"]

Iteration = Callable[[Tensor], Tensor]

#: Limits of the robust fallbacks (Newton steps; conjugate-gradient iterations).
_NEWTON_STEPS = 100
_CG_ITERATIONS = 2000


class ConstraintSolver:
    """Keeps distance constraints and rigid waters satisfied to a relative tolerance.

    Args:
        constraints: what is constrained (pairs + distances, rigid waters).
        masses: (N,) amu; constraint forces are mass-weighted as in SHAKE/RATTLE.
        tolerance: relative tolerance of constrained distances; for velocities, of
            the cosine between a constrained bond and its relative velocity.
        angles: (i, j, k) → equilibrium angle i-j-k, radians, for the CCMA
            preconditioner (see :func:`~torchmd_plugins.dynamics.ccma.angle_table`).
        max_iterations: upper limit of iterations per call.
    """

    #: Accelerators only: verify CCMA convergence every this many calls.
    verify_every = 50

    def __init__(
        self,
        constraints: Constraints,
        masses: Tensor,
        tolerance: float = 1e-6,
        angles: Mapping[tuple[int, int, int], float] | None = None,
        max_iterations: int = 150,
    ) -> None:
        if tolerance <= 0:
            raise ValueError(f"constraint tolerance must be > 0, got {tolerance}")
        masses = masses.detach().to(torch.float64).cpu()
        self.tolerance = float(tolerance)
        self.max_iterations = int(max_iterations)
        self.pairs = constraints.pairs.to(torch.int64).reshape(-1, 2)
        self.distances = constraints.distances.to(torch.float64).reshape(-1)
        self.waters = constraints.waters.to(torch.int64).reshape(-1, 3)
        self.inv_mass = torch.where(
            masses > 0, 1.0 / masses.clamp(min=1e-300), torch.zeros_like(masses)
        )
        self._check(masses)
        self.water_geometry = (
            WaterGeometry.of(self.waters, masses, constraints.water_distances)
            if len(self.waters)
            else None
        )
        self.rows, self.cols, self.vals = coupling_inverse(
            self.pairs, self.distances, self.inv_mass, angles or {}
        )
        self._budget = {"positions": 8, "velocities": 8}
        self._calls = {"positions": 0, "velocities": 0}
        #: How often CCMA did not converge and the Newton/CG fallback took over.
        self.fallbacks = 0
        #: dtype → the native kernel's CSR inverse and parameters (built on first use).
        self._csr: dict[torch.dtype, tuple[Tensor, ...]] = {}

    @classmethod
    def from_system(
        cls, system: System, tolerance: float = 1e-6, masses: Tensor | None = None
    ) -> ConstraintSolver | None:
        """The solver of ``system.constraints``, or None when nothing is constrained."""
        c = system.constraints
        if c is None or c.count == 0:
            return None
        return cls(
            c,
            system.masses if masses is None else masses,
            tolerance,
            angle_table(system),
        )

    @property
    def count(self) -> int:
        """Number of independent constraints (3 per rigid water)."""
        return int(self.pairs.shape[0]) + 3 * int(self.waters.shape[0])

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ConstraintSolver:
        """Move the solver's tensors (indices stay int64). Returns ``self``."""
        for name in ("pairs", "waters", "rows", "cols"):
            setattr(self, name, getattr(self, name).to(device=device))
        for name in ("distances", "inv_mass", "vals"):
            setattr(self, name, getattr(self, name).to(device=device, dtype=dtype))
        self._csr = {}
        return self

    def _check(self, masses: Tensor) -> None:
        n = int(masses.shape[0])
        for name, idx in (("pairs", self.pairs), ("waters", self.waters)):
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise TopologyError(
                    f"constraint {name} refer to atoms outside 0..{n - 1}"
                )
        if not self.pairs.numel():
            return
        massless = (masses[self.pairs] <= 0).all(-1)
        if bool(massless.any()):
            i, j = self.pairs[int(torch.nonzero(massless)[0])].tolist()
            raise TopologyError(
                f"constraint {i}-{j} joins two massless atoms; remove it or give them "
                "mass"
            )
        if bool((self.distances <= 0).any()):
            raise TopologyError("constraint distances must be > 0 Å")

    def effective_tolerance(self, dtype: torch.dtype) -> float:
        """The tolerance used for ``dtype``: float32 positions of ~100 Å carry ~1e-5 Å
        of rounding, so no tighter goal is reachable there."""
        return max(self.tolerance, 64.0 * torch.finfo(dtype).eps)

    # -- public operations ------------------------------------------------------------
    def position_correction(
        self, positions: Tensor, reference: Tensor, box: Tensor | None = None
    ) -> Tensor:
        """(R, N, 3) displacement that puts ``positions`` on the constraint surface.

        Each atom moves along a mass-weighted combination of the constrained vectors of
        ``reference`` (SHAKE's choice); ``reference`` must satisfy the constraints (use
        :meth:`projection` for a structure that does not).

        Args:
            positions: (R, N, 3) unconstrained positions, Å.
            reference: (R, N, 3) constrained positions of the previous step, Å.
            box: (R, 3, 3) or None; constrained vectors use the minimum image.
        """
        tol = self.effective_tolerance(positions.dtype)
        dx = torch.zeros_like(positions)
        if self.water_geometry is not None:
            dx = dx + settle_positions(
                positions, reference, self.waters, self.water_geometry, tol, box
            )
        if self.pairs.numel():
            corr, done = self._ccma_positions(positions, reference, box)
            if done is not None and not bool(done.all()):
                self.fallbacks += 1
                corr = torch.where(
                    done[:, None, None], corr, self._newton_positions(positions, box)
                )
            dx = dx + corr
        return dx

    def projection(self, positions: Tensor, box: Tensor | None = None) -> Tensor:
        """(R, N, 3) displacement onto the constraint surface for any structure (robust
        Newton iterations; rigid waters by SETTLE). Not for the per-step hot path."""
        tol = self.effective_tolerance(positions.dtype)
        dx = torch.zeros_like(positions)
        if self.water_geometry is not None:
            dx = dx + settle_positions(
                positions, positions, self.waters, self.water_geometry, tol, box
            )
        if self.pairs.numel():
            dx = dx + self._newton_positions(positions, box)
        return dx

    def velocity_correction(
        self, velocities: Tensor, positions: Tensor, box: Tensor | None = None
    ) -> Tensor:
        """(R, N, 3) change of ``velocities`` that removes every relative velocity along
        a constraint (RATTLE's second half), mass-weighted. ``positions`` must satisfy
        the constraints."""
        tol = self.effective_tolerance(velocities.dtype)
        dv = torch.zeros_like(velocities)
        if self.water_geometry is not None:
            dv = dv + settle_velocities(
                velocities, positions, self.waters, self.water_geometry, tol, box
            )
        if self.pairs.numel():
            corr, done = self._ccma_velocities(velocities, positions, box)
            if done is not None and not bool(done.all()):
                self.fallbacks += 1
                corr = torch.where(
                    done[:, None, None],
                    corr,
                    self._cg_velocities(velocities, positions, box),
                )
            dv = dv + corr
        return dv

    def relative_errors(self, positions: Tensor, box: Tensor | None = None) -> Tensor:
        """(R, C + 3W) |r − d| / d of every constraint (pairs first, then O-H1, O-H2,
        H1-H2 of each water)."""
        pb = None if box is None else box[:, None]
        parts = []
        if self.pairs.numel():
            a, b = self.pairs[:, 0], self.pairs[:, 1]
            r = minimum_image(positions[:, a] - positions[:, b], pb).norm(dim=-1)
            parts.append((r / self.distances - 1.0).abs())
        if self.water_geometry is not None:
            g = self.water_geometry
            o, h1, h2 = self.waters.unbind(-1)
            for i, j, d in ((o, h1, g.d_oh), (o, h2, g.d_oh), (h1, h2, g.d_hh)):
                r = minimum_image(positions[:, i] - positions[:, j], pb).norm(dim=-1)
                parts.append((r / d - 1.0).abs())
        if not parts:
            return positions.new_zeros(positions.shape[0], 0)
        return torch.cat(parts, dim=1)

    # -- CCMA -------------------------------------------------------------------------
    def _ccma_positions(
        self, x: Tensor, ref: Tensor, box: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        if self._native(x, ref, box):
            return self._ccma_native(True, x, ref, box)
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        pb = None if box is None else box[:, None]
        s = minimum_image(ref[:, a] - ref[:, b], pb)  # (R, C, 3) reference directions
        d2 = self.distances.square()
        w = self.inv_mass[a] + self.inv_mass[b]
        limit = 2.0 * self.effective_tolerance(x.dtype) * d2
        x_ab = x[:, a] - x[:, b]
        corr = torch.zeros_like(x)

        def iterate(done: Tensor) -> Tensor:
            nonlocal corr
            r = minimum_image(x_ab + corr[:, a] - corr[:, b], pb)
            diff = d2 - r.square().sum(-1)  # (R, C)
            done = done | (diff.abs() <= limit).all(-1)
            rs = (r * s).sum(-1)
            rs = torch.where(
                rs < 0.1 * d2, 0.1 * d2, rs
            )  # guard against a flipped bond
            delta = torch.where(
                done[:, None], torch.zeros_like(diff), diff / (2.0 * w * rs)
            )
            corr = corr + self._scatter(self._precondition(delta)[..., None] * s)
            return done

        done = self._run("positions", iterate, x)
        return corr, done

    def _ccma_velocities(
        self, v: Tensor, x: Tensor, box: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        if self._native(v, x, box):
            return self._ccma_native(False, v, x, box)
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        r = minimum_image(x[:, a] - x[:, b], None if box is None else box[:, None])
        r2 = r.square().sum(-1)
        w = self.inv_mass[a] + self.inv_mass[b]
        tol = self.effective_tolerance(v.dtype)
        tiny = torch.finfo(v.dtype).tiny ** 0.5
        v_ab = v[:, a] - v[:, b]
        corr = torch.zeros_like(v)

        def iterate(done: Tensor) -> Tensor:
            nonlocal corr
            u = v_ab + corr[:, a] - corr[:, b]
            rv = (r * u).sum(-1)
            done = done | (
                rv.abs() <= tol * (r2 * u.square().sum(-1)).sqrt() + tiny
            ).all(-1)
            delta = torch.where(done[:, None], torch.zeros_like(rv), -rv / (w * r2))
            corr = corr + self._scatter(self._precondition(delta)[..., None] * r)
            return done

        done = self._run("velocities", iterate, v)
        return corr, done

    def _native(self, x: Tensor, ref: Tensor, box: Tensor | None) -> bool:
        """Whether the C++ CCMA loop replaces the torch one (CPU, where checking
        convergence every iteration is free, and no graph wanted)."""
        if not self.checks_are_free(x.device):
            return False
        extra = () if box is None else (box,)
        return use_native(x, ref, *extra, self.distances, self.inv_mass, self.vals)

    def _ccma_native(
        self, positions_mode: bool, x: Tensor, ref: Tensor, box: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The CCMA iteration of ``_ccma_positions`` (``positions_mode``: x positions,
        ref the previous ones) or ``_ccma_velocities`` (x velocities, ref positions)
        in C++: the same arithmetic, per replica until converged."""
        kernels = load_native()
        assert kernels is not None
        dtype = x.dtype
        csr = self._csr.get(dtype)
        if csr is None:  # the sparse inverse by rows, each row in index_add's order
            order = torch.argsort(self.rows, stable=True)
            counts = torch.bincount(self.rows, minlength=int(self.pairs.shape[0]))
            rowptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            csr = (
                rowptr.contiguous(),
                self.cols[order].contiguous(),
                self.vals[order].to(dtype).contiguous(),
                self.distances.to(dtype).contiguous(),
                self.inv_mass.to(dtype).contiguous(),
            )
            self._csr[dtype] = csr
        rowptr, cols, vals, dist, inv_mass = csr
        tol = self.effective_tolerance(dtype)
        corr, done = kernels.ccma(
            positions_mode, x, ref.to(dtype), self.pairs, dist, inv_mass,
            rowptr, cols, vals, None if box is None else box.to(dtype), tol,
            self.max_iterations,
        )  # fmt: skip
        return corr, done

    def _precondition(self, delta: Tensor) -> Tensor:
        """(R, C) multipliers: the sparse inverse coupling matrix times ``delta``."""
        return torch.zeros_like(delta).index_add(
            1, self.rows, delta[:, self.cols] * self.vals
        )

    def _scatter(self, g: Tensor) -> Tensor:
        """(R, N, 3): +g/m on the first atom of each constraint, −g/m on the second."""
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        inv = self.inv_mass
        out = torch.zeros(g.shape[0], inv.shape[0], 3, dtype=g.dtype, device=g.device)
        return out.index_add(1, a, g * inv[a][:, None]).index_add(
            1, b, -g * inv[b][:, None]
        )

    def _run(self, what: str, iterate: Iteration, like: Tensor) -> Tensor | None:
        """Call ``iterate(done) -> done`` until all replicas are done.

        On the CPU stop as soon as all replicas converged. Elsewhere run the learnt
        number of iterations without synchronising, and every ``verify_every`` calls
        check and learn. Returns (R,) done where it was checked, else None.
        """
        done = torch.zeros(like.shape[0], dtype=torch.bool, device=like.device)
        if self.checks_are_free(like.device):
            for _ in range(self.max_iterations):
                done = iterate(done)
                if bool(done.all()):
                    break
            return done
        budget = self._budget[what]
        for _ in range(budget):
            done = iterate(done)
        self._calls[what] += 1
        if self._calls[what] % self.verify_every != 1:
            return None
        extra = 0
        while not bool(done.all()) and budget + extra < self.max_iterations:
            done = iterate(done)
            extra += 1
        if extra:
            self._budget[what] = min(self.max_iterations, budget + extra + 2)
        return done

    @staticmethod
    def checks_are_free(device: torch.device) -> bool:
        """Whether reading a convergence flag costs nothing (no device to wait for)."""
        return device.type == "cpu"

    # -- robust fallbacks: Newton + conjugate gradients -------------------------------
    def _newton_positions(self, x: Tensor, box: Tensor | None) -> Tensor:
        """Damped Newton iterations on the distance equations along current bonds."""
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        pb = None if box is None else box[:, None]
        d2 = self.distances.square()
        limit = 2.0 * self.effective_tolerance(x.dtype)
        x_ab = x[:, a] - x[:, b]
        corr = torch.zeros_like(x)

        def errors(c: Tensor) -> tuple[Tensor, Tensor]:
            r = minimum_image(x_ab + c[:, a] - c[:, b], pb)
            diff = d2 - r.square().sum(-1)
            return r, diff

        r, diff = errors(corr)
        for _ in range(_NEWTON_STEPS):
            worst = (diff.abs() / d2).amax(-1)  # (R,)
            if bool((worst <= limit).all()):
                break
            rhs = torch.where(
                (worst <= limit)[:, None], torch.zeros_like(diff), 0.5 * diff
            )
            lam = self._cg(partial(self._coupling, r=r), rhs, 1e-3)
            step = self._scatter(lam[..., None] * r)
            alpha = torch.ones_like(worst)
            for _ in range(30):  # halve the step until the worst error shrinks
                _, diff_t = errors(corr + alpha[:, None, None] * step)
                better = (diff_t.abs() / d2).amax(-1) < worst
                if bool((better | (worst <= limit)).all()):
                    break
                alpha = torch.where(better, alpha, 0.5 * alpha)
            corr = corr + alpha[:, None, None] * step
            r, diff = errors(corr)
        return corr

    def _cg_velocities(self, v: Tensor, x: Tensor, box: Tensor | None) -> Tensor:
        """Exact RATTLE velocity projection: K μ = −r·v_rel by conjugate gradients."""
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        r = minimum_image(x[:, a] - x[:, b], None if box is None else box[:, None])
        rhs = -(r * (v[:, a] - v[:, b])).sum(-1)
        tol = self.effective_tolerance(v.dtype)
        mu = self._cg(partial(self._coupling, r=r), rhs, tol)
        return self._scatter(mu[..., None] * r)

    def _coupling(self, lam: Tensor, r: Tensor) -> Tensor:
        """(K λ)_c = r_c · (Δx_a − Δx_b), Δx the displacement of λ along the r."""
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        disp = self._scatter(lam[..., None] * r)
        return (r * (disp[:, a] - disp[:, b])).sum(-1)

    def _cg(
        self, apply: Callable[[Tensor], Tensor], rhs: Tensor, rel_tol: float
    ) -> Tensor:
        """Solve the symmetric positive definite systems apply(x) = rhs, (R, C), by
        Jacobi-preconditioned conjugate gradients, each row to |res| ≤ rel_tol |rhs|."""
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        diag = (self.inv_mass[a] + self.inv_mass[b]) * self.distances.square()
        x = torch.zeros_like(rhs)
        res = rhs.clone()
        z = res / diag
        p = z
        rz = (res * z).sum(-1)
        goal = rel_tol * rhs.norm(dim=-1)
        done = torch.zeros(rhs.shape[0], dtype=torch.bool, device=rhs.device)
        for _ in range(_CG_ITERATIONS):
            done = done | (
                res.norm(dim=-1) <= goal
            )  # rows stop alone, as without a batch
            if bool(done.all()):
                break
            ap = apply(p)
            pap = (p * ap).sum(-1)
            step = torch.where(
                pap > 0,
                rz / pap.clamp(min=torch.finfo(rhs.dtype).tiny),
                torch.zeros_like(pap),
            )
            step = torch.where(done, torch.zeros_like(step), step)
            x = x + step[:, None] * p
            res = res - step[:, None] * ap
            z = res / diag
            rz_new = (res * z).sum(-1)
            p = (
                z
                + torch.where(
                    rz > 0,
                    rz_new / rz.clamp(min=torch.finfo(rhs.dtype).tiny),
                    torch.zeros_like(rz),
                )[:, None]
                * p
            )
            rz = rz_new
        return x
