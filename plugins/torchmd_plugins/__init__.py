"""The built-in plugins of torchmd-core.

Each subpackage is one plugin, registered through the ``torchmd_core`` entry-point
group exactly like a third-party plugin, and using only what ``torchmd_core`` exports.

- ``amber``: topology/coordinate loaders (parmed, mdtraj) and the bonded ``amber``
  potential.
- ``nonbonded``: Lennard-Jones + reaction-field / cutoff electrostatics (``nonbonded``).
- ``dynamics``: ``verlet`` and ``langevin`` integrators, constraint solvers.
- ``barostats``: the Monte Carlo barostat (``montecarlo``).
- ``reporters``: ``csv``, trajectories (``dcd``, ``xtc``), the final ``pdb`` and
  ``checkpoint``.
- ``torchmdnet``: TorchMD-NET neural network potentials (``torchmdnet``).
"""
