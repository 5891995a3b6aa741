"""Weight matching: permute members' hidden channels to resemble a reference network.

Git Re-Basin (Ainsworth, Hayase & Srinivasa, ICLR 2023), Section 3.2: maximise
sum_l <W_l^ref, pi(W)_l> over one permutation per channel space by coordinate descent. With every
other space's permutation held, the best permutation of one space is a linear assignment problem,
solved exactly by scipy.optimize.linear_sum_assignment. The design (a spec mapping each tensor's
axes to spaces, spaces visited in a seeded random order, stop after a pass without improvement)
follows samuela/git-re-basin's src/weight_matching.py; this is a fresh implementation on the
zoo's flat vectors and `zoo.families.symmetry.PermutationSpec`.

Which families align. An aligned member computes the member's function only where hidden-channel
permutations are exact symmetries of the family (`Family.symmetric`: the standard family).
- sigma-Asym: its flat vectors permute as the standard family's do, but FiGLU's F stays the zoo's,
  so the aligned vector is another network. Refused unless `force=True`.
- W-Asym: always refused. Its flat vector holds only the entries its zoo's mask marks trainable;
  a permutation moves entries onto fixed positions and fixed ones onto trainable positions, so it
  is no permutation of the flat vector at all.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .families import FAMILIES, build, check_family
from .families.symmetry import RESNET8, PermutationSpec, permute_tensor
from .layout import Layout, layout

Perms = dict[str, torch.Tensor]  # channel space -> permutation: a tensor's dim d becomes index_select(d, perm)


def family_spec(family: str) -> PermutationSpec:
    # The family record is to name its weight space's symmetry (field `permutations`); until it
    # does, every family here is a ResNet-8 and shares RESNET8.
    return FAMILIES[check_family(family)].permutations


def align(weights, reference, family: str, *, seed: int = 0, max_iter: int = 100, force: bool = False,
          return_perms: bool = False):
    """[n, P] float32 members -> [n, P] float32, each member's hidden channels permuted to match
    `reference` [P] by weight matching; P in the canonical `zoo.flatten` order of `family`.

    `seed` orders the coordinate descent; `max_iter` bounds its passes. `force=True` aligns a family
    whose fixed pieces break the symmetry (sigma-Asym) anyway; see the module docstring. With
    `return_perms`, also returns one {space: [width] int64} per member.
    """
    lay = alignable_layout(family, force=force)
    weights, reference = check_weights(weights, reference, lay.size)
    spec = family_spec(family)
    ref = tensors(lay, reference)
    aligned, perms = np.empty_like(weights), []
    for i, row in enumerate(weights):
        params = tensors(lay, row)
        found = match(params, ref, spec, seed=seed, max_iter=max_iter)
        aligned[i] = torch.cat([permute_tensor(t, spec.axes_of(n), found).reshape(-1) for n, t in params.items()])
        perms.append({s: p.numpy() for s, p in found.items()})
    return (aligned, perms) if return_perms else aligned


def alignable_layout(family: str, *, force: bool) -> Layout:
    """The family's flat layout, or a ValueError saying why its members cannot be aligned."""
    lay = layout(build(family))
    masked = [t.name for t in lay.tensors if t.size != math.prod(t.shape)]
    symmetric = [f for f, rec in FAMILIES.items() if rec.symmetric]
    if masked:
        raise ValueError(f"family={family!r}: its flat vectors hold only mask-selected entries of {masked[0]} and "
                         f"{len(masked) - 1} more tensors, and a permutation moves entries across the zoo's fixed "
                         f"mask, so no permuted flat vector exists; allowed: {', '.join(symmetric)}, "
                         f"or with force=True a family without fixed entries")
    if not FAMILIES[family].symmetric and not force:
        raise ValueError(f"family={family!r}: its fixed pieces break the permutation symmetry, so an aligned member "
                         f"is another function; allowed: {', '.join(symmetric)}, or force=True to permute anyway")
    return lay


def check_weights(weights, reference, size: int) -> tuple[np.ndarray, np.ndarray]:
    weights, reference = np.asarray(weights, np.float32), np.asarray(reference, np.float32)
    if weights.ndim != 2 or weights.shape[1] != size:
        raise ValueError(f"weights shape={weights.shape}: must be [n, {size}] for this family")
    if reference.shape != (size,):
        raise ValueError(f"reference shape={reference.shape}: must be [{size}] for this family")
    return weights, reference


def tensors(lay: Layout, flat: np.ndarray) -> dict[str, torch.Tensor]:
    """[P] flat vector of an unmasked family -> {name: float64 tensor of its full shape}; float64
    keeps the assignment costs free of rounding ties, and casting back to float32 is exact."""
    parts = lay.split(torch.from_numpy(flat).double())
    return {t.name: parts[t.name].reshape(t.shape) for t in lay.tensors}


def match(params: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], spec: PermutationSpec, *,
          seed: int = 0, max_iter: int = 100) -> Perms:
    """Permutations that bring `params` closest to `reference` (same names and shapes) in summed
    inner product, by coordinate descent over the spaces that act on these tensors."""
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter}: must be >= 1")
    users = {s: spec.users(s, reference) for s in spec.spaces}
    spaces = [s for s, u in users.items() if u]
    perms, order = spec.identity(), np.random.default_rng(seed)
    for _ in range(max_iter):
        improved = False
        for k in order.permutation(len(spaces)):
            space = spaces[k]
            gain, perms[space] = best_permutation(space, users[space], params, reference, perms, spec)
            improved |= gain
        if not improved:
            break
    return perms


def best_permutation(space: str, users, params, reference, perms: Perms,
                     spec: PermutationSpec) -> tuple[bool, torch.Tensor]:
    """(whether it beats the current one, the permutation of `space` maximising the objective with
    every other space's permutation held)."""
    width = spec.spaces[space]
    cost = torch.zeros(width, width, dtype=torch.float64)
    for name, dim in users:  # cost[i, j]: reference channel i against the member's channel j
        ref = reference[name].movedim(dim, 0).reshape(width, -1)
        own = permute_tensor(params[name], spec.axes_of(name), perms, skip=dim).movedim(dim, 0).reshape(width, -1)
        cost += ref @ own.T
    cost = cost.numpy()
    rows, cols = linear_sum_assignment(cost, maximize=True)
    new, old = cost[rows, cols].sum(), cost[rows, perms[space].numpy()].sum()
    return bool(new > old + 1e-12 * max(1.0, abs(old))), torch.from_numpy(cols)
