"""A functional API for research code: pure energy, force and integration functions that
compose with :mod:`torch.func` (``grad``, ``vmap``, ``jacrev``).

:func:`energy_fn` turns a potential into ``energy(params, positions, box) -> (R,)``,
where ``params`` maps names to tensors that replace the potential's own for that call
(:func:`torch.func.functional_call`): force-field families (``"nonbonded.epsilon"``,
``"charges"``, ``"bonds.k"``: see :mod:`torchmd_core.parameters`; a family held by
several terms is replaced in all of them) or any parameter/buffer by its module name
(``"potentials.2.model.representation_model..."``, the weights of a network).
:func:`parameters` collects the current values as a starting point::

    energy = energy_fn(potential)
    params = parameters(potential, "nonbonded.epsilon", "torsions.k")
    grads = torch.func.grad(lambda p: energy(p, x, box).sum())(params)
    per_set = torch.func.vmap(energy, in_dims=({"torsions.k": 0}, None, None))(
        {"torsions.k": stacked_k}, x, box)

:func:`integrate` is velocity Verlet or BAOAB Langevin written as a pure function of
tensors (the noise is an input), so it too can be differentiated, vmapped over
replicas or parameter sets, or both.

What ``vmap`` supports: every built-in term without a cutoff (``nonbonded`` with all
pairs, ``amber``), and terms with a cutoff when the pairs are fixed (pass
``neighbors=`` to :func:`energy_fn`: a list built once with a skin, valid while no atom
moves more than half the skin). Updating a neighbour list takes data-dependent
decisions, which ``vmap`` cannot trace; ``grad`` alone has no such limit. Constraints
and barostats are not part of :func:`integrate`; use
:func:`~torchmd_core.trajectory.simulate` for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from torchmd_core.errors import ConfigError
from torchmd_core.neighbors import Neighbors
from torchmd_core.parameters import _holders
from torchmd_core.potential import Potential, PotentialSum
from torchmd_core.state import State
from torchmd_core.units import (
    AMU_A2_PS2_TO_KCAL_MOL,
    BOLTZMANN_KCAL_MOL_K,
    KCAL_MOL_A_AMU_TO_A_PS2,
)

__all__ = [
    "EnergyFn",
    "ForceFn",
    "energy_fn",
    "forces_fn",
    "integrate",
    "parameters",
    "standard_noise",
]

#: ``energy(params, positions (R, N, 3), box (R, 3, 3) | None) -> (R,)`` kcal/mol.
EnergyFn = Callable[[Mapping[str, Tensor], Tensor, Tensor | None], Tensor]
#: ``forces(params, positions, box) -> (R, N, 3)`` kcal/mol/Å.
ForceFn = Callable[[Mapping[str, Tensor], Tensor, Tensor | None], Tensor]


class _Evaluate(nn.Module):
    """The potential at given positions (the module ``functional_call`` runs)."""

    def __init__(self, potential: Potential, neighbors: Neighbors | None) -> None:
        super().__init__()
        self.potential = potential
        self.neighbors = neighbors

    def forward(self, positions: Tensor, box: Tensor | None) -> Tensor:
        state = State(positions=positions, box=box)
        potential = self.potential
        if not isinstance(potential, PotentialSum):
            return potential.energy(state.replace(neighbors=self.neighbors))
        state = potential.place_sites(state)
        if self.neighbors is None and potential.cutoff is not None:
            return potential.energy(state)  # the shared list decides (not under vmap)
        state = state.replace(neighbors=self.neighbors)
        total = positions.new_zeros(positions.shape[0])
        for term in potential.potentials:
            assert isinstance(term, Potential)
            total = total + term.energy(state)
        return total


def _names(potential: nn.Module) -> tuple[dict[str, list[str]], set[str]]:
    """Family → module names of its holders; and every tensor name of the module."""
    families = {
        family: [h.path for h in holders]
        for family, holders in _holders(potential).items()
    }
    own = {n for n, _ in potential.named_parameters(remove_duplicate=False)}
    own |= {n for n, _ in potential.named_buffers(remove_duplicate=False)}
    return families, own


def parameters(potential: nn.Module, *names: str) -> dict[str, Tensor]:
    """Detached copies of the named tensors: families or module names.

    Default: every family the potential holds (except the integer periodicities) and
    every ``nn.Parameter`` that is not one of them (e.g. network weights).
    """
    families, own = _names(potential)
    tensors: dict[str, Tensor] = dict(
        potential.named_parameters(remove_duplicate=False)
    )
    tensors.update(potential.named_buffers(remove_duplicate=False))
    if not names:
        held = {p for paths in families.values() for p in paths}
        names = tuple(
            f for f in sorted(families) if not f.endswith("periodicity")
        ) + tuple(n for n, _ in potential.named_parameters() if n not in held)
    out = {}
    for name in names:
        if name in families:
            out[name] = tensors[families[name][0]].detach().clone()
        elif name in own:
            out[name] = tensors[name].detach().clone()
        else:
            raise ConfigError(_unknown(name, families))
    return out


def _unknown(name: str, families: Mapping[str, list[str]]) -> str:
    return (
        f"no parameter named {name!r}: give a force-field family "
        f"({', '.join(sorted(families)) or 'none here'}) or a module tensor name "
        "(as named_parameters()/named_buffers() list them)"
    )


def energy_fn(potential: Potential, neighbors: Neighbors | None = None) -> EnergyFn:
    """``energy(params, positions, box) -> (R,)`` kcal/mol, a pure function.

    Args:
        potential: a potential or :class:`~torchmd_core.potential.PotentialSum`; its own
            tensors are used for every name ``params`` leaves out.
        neighbors: fixed pairs for the terms with a cutoff (required under ``vmap``);
            their radius must cover every cutoff. None: terms build their pairs (the
            shared list of a PotentialSum is updated as in a simulation).

    ``params`` keys are force-field families or module tensor names (see the module
    docstring); ``positions`` is (R, N, 3) Å and ``box`` (R, 3, 3) Å or None.
    """
    families, own = _names(potential)
    module = _Evaluate(potential, neighbors)

    def energy(
        params: Mapping[str, Tensor], positions: Tensor, box: Tensor | None = None
    ) -> Tensor:
        mapped: dict[str, Tensor] = {}
        for name, value in params.items():
            if name in families:
                for path in families[name]:
                    mapped[f"potential.{path}"] = value
            elif name in own:
                mapped[f"potential.{name}"] = value
            else:
                raise ConfigError(_unknown(name, families))
        result: Tensor = torch.func.functional_call(module, mapped, (positions, box))
        return result

    return energy


def forces_fn(energy: EnergyFn) -> ForceFn:
    """``forces(params, positions, box) = −∂ΣE/∂positions`` by :func:`torch.func.grad`
    (composable with outer ``grad``/``vmap``, and with ordinary autograd)."""

    def forces(
        params: Mapping[str, Tensor], positions: Tensor, box: Tensor | None = None
    ) -> Tensor:
        grad: Tensor = torch.func.grad(lambda x: energy(params, x, box).sum())(
            positions
        )
        return -grad

    return forces


def integrate(
    forces: ForceFn,
    params: Mapping[str, Tensor],
    positions: Tensor,
    velocities: Tensor,
    masses: Tensor,
    timestep_fs: float,
    steps: int,
    *,
    box: Tensor | None = None,
    friction_per_ps: float = 0.0,
    temperature_K: float | None = None,
    noise: Tensor | None = None,
    trajectory: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Velocity Verlet, or Langevin BAOAB with ``friction_per_ps > 0``, as a pure
    function (no state, no in-place edits, no random draws).

    The same splitting as the ``verlet`` and ``langevin`` integrators without
    constraints: B (half kick), A (half drift), O (exact Ornstein-Uhlenbeck), A, B.

    Args:
        forces: from :func:`forces_fn` (or any ``(params, x, box) -> forces``).
        params: passed to ``forces``.
        positions: (R, N, 3) Å.
        velocities: (R, N, 3) Å/ps.
        masses: (N,) amu; massless atoms (virtual sites) do not move.
        timestep_fs: fs.
        steps: number of steps.
        box: (R, 3, 3) Å or None, constant.
        friction_per_ps: γ, 1/ps (0: Verlet, NVE).
        temperature_K: bath temperature (required with friction).
        noise: (steps, R, N, 3) standard normal numbers, one set per step (required
            with friction): draw them once (:func:`standard_noise`) to keep the random
            stream fixed while parameters change.
        trajectory: also return the positions after every step.

    Returns:
        Final positions, final velocities, and (steps, R, N, 3) positions or None.
    """
    dt = timestep_fs * 1e-3
    m = masses.to(positions)
    inv_m = torch.where(m > 0, 1.0 / torch.where(m > 0, m, 1.0), 0.0)[:, None]
    accel = inv_m * KCAL_MOL_A_AMU_TO_A_PS2
    thermostat = friction_per_ps > 0.0
    if thermostat:
        if temperature_K is None or noise is None:
            raise ValueError(
                "Langevin dynamics (friction > 0) needs temperature_K and noise"
            )
        if noise.shape[0] < steps or noise.shape[1:] != positions.shape:
            raise ValueError(
                f"noise must be (steps, R, N, 3) = ({steps}, "
                f"{', '.join(map(str, positions.shape))}), got {tuple(noise.shape)}"
            )
        c = math.exp(-friction_per_ps * dt)
        kT = BOLTZMANN_KCAL_MOL_K * temperature_K
        sigma = math.sqrt(1.0 - c * c) * torch.sqrt(kT / AMU_A2_PS2_TO_KCAL_MOL * inv_m)
    x, v = positions, velocities
    f = forces(params, x, box)
    frames = []
    for i in range(steps):
        v = v + (0.5 * dt) * accel * f
        if thermostat:
            assert noise is not None
            x = x + (0.5 * dt) * v
            v = c * v + sigma * noise[i]
            x = x + (0.5 * dt) * v
        else:
            x = x + dt * v
        f = forces(params, x, box)
        v = v + (0.5 * dt) * accel * f
        if trajectory:
            frames.append(x)
    return x, v, torch.stack(frames) if trajectory else None


def standard_noise(
    steps: int,
    shape: tuple[int, ...],
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> Tensor:
    """(steps, *shape) standard normal numbers from a generator seeded ``seed``."""
    g = torch.Generator(device=device).manual_seed(int(seed))
    return torch.randn((steps, *shape), generator=g, dtype=dtype, device=device)
