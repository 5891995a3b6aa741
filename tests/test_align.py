import numpy as np
import pytest
import torch

import zoo
from zoo.alignment import align, match
from zoo.families import fixed_digest
from zoo.families.symmetry import RESNET8, PermutationSpec, permute_network, permute_params, random_permutations

FAMILIES = ("standard", "w_asym", "sigma_asym")


@torch.no_grad()
def member_net(arch, seed=0):
    """A seeded init moved off GroupNorm's 1 / 0 affines and the zero head bias ("trained-ish"),
    so every tensor the spec permutes carries information."""
    net = zoo.init_weights(zoo.build(arch), seed)
    gen = torch.Generator().manual_seed(1000 + seed)
    for p in net.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return net.eval()


def flat(net) -> np.ndarray:
    return zoo.flatten(net).numpy()


@torch.no_grad()
def logits_of(arch, vec, x) -> torch.Tensor:
    return zoo.unflatten(zoo.build(arch), vec).eval()(x)


def named(net) -> dict[str, torch.Tensor]:
    return {n: p.detach().double() for n, p in net.named_parameters()}


def test_spec_names_every_tensor_of_every_family_with_its_width():
    names = set()
    for arch in FAMILIES:
        net = zoo.build(arch)
        for name, t in [*net.named_parameters(), *net.named_buffers()]:
            for dim, space in enumerate(RESNET8.axes_of(name)):
                assert space is None or t.shape[dim] == RESNET8.spaces[space], (name, dim)
            names.add(name)
    assert names == set(RESNET8.axes)


def test_spec_refuses_unknown_spaces_and_tensors():
    with pytest.raises(ValueError, match=r"axes\['w'\].*unknown spaces \['b'\].*allowed: a"):
        PermutationSpec(spaces={"a": 2}, axes={"w": ("b",)})
    with pytest.raises(ValueError, match="tensor='nope'"):
        RESNET8.axes_of("nope")


def test_standard_is_invariant_to_hidden_permutations():
    net = member_net("standard", seed=5)
    x = torch.randn(4, 3, 32, 32)
    for seed in range(3):
        twin = permute_params(net, random_permutations(seed))
        assert not torch.equal(zoo.flatten(twin), zoo.flatten(net))
        torch.testing.assert_close(twin(x), net(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["w_asym", "sigma_asym"])
def test_fixed_pieces_break_the_symmetry_unless_permuted_too(arch):
    """Trainable entries alone: another function. Trainable and fixed entries together (masks and
    fixed values follow their weight, F is conjugated): the same function, but other fixed pieces
    than the zoo's, so the twin is not a member of this zoo's family."""
    net, perms = member_net(arch, seed=5), random_permutations(0)
    x = torch.randn(4, 3, 32, 32)
    assert (permute_params(net, perms)(x) - net(x)).abs().max() > 1e-2
    twin = permute_network(net, perms)
    assert fixed_digest(twin) != fixed_digest(net)
    torch.testing.assert_close(twin(x), net(x), atol=1e-5, rtol=1e-4)


def test_figlu_is_equivariant_only_with_f_conjugated():
    act = zoo.build("sigma_asym").stem.act
    x = torch.randn(4, 16, 8, 8)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(act(x[:, perm]), act(x)[:, perm], atol=1e-4)
    conjugated = permute_network(zoo.build("sigma_asym"), {**RESNET8.identity(), "s0": perm}).stem.act
    torch.testing.assert_close(conjugated(x[:, perm]), act(x)[:, perm])
    relu = zoo.build("standard").stem.act
    torch.testing.assert_close(relu(x[:, perm]), relu(x)[:, perm])


@pytest.mark.parametrize("seed", [0, 1])
def test_weight_matching_finds_the_inverse_of_the_applied_permutation(seed):
    net, applied = member_net("standard", seed=5), random_permutations(3 + seed)
    found = match(named(permute_params(net, applied)), named(net), RESNET8, seed=seed)
    for space, p in applied.items():
        assert not torch.equal(p, torch.arange(len(p))), space
        assert torch.equal(p[found[space]], torch.arange(len(p))), space


def test_align_undoes_permutations_and_keeps_logits():
    net = member_net("standard", seed=5)
    ref = flat(net)
    members = np.stack([ref] + [flat(permute_params(net, random_permutations(s))) for s in range(3)])
    aligned, perms = align(members, ref, "standard", return_perms=True)
    assert aligned.dtype == np.float32 and aligned.shape == members.shape
    np.testing.assert_array_equal(aligned, np.tile(ref, (4, 1)))
    assert all((p == np.arange(len(p))).all() for p in perms[0].values())
    assert not all((p == np.arange(len(p))).all() for p in perms[1].values())
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(logits_of("standard", aligned[2], x), net(x), atol=1e-5, rtol=1e-4)


def test_align_moves_independent_members_towards_the_reference_and_keeps_their_function():
    ref = flat(member_net("standard", seed=0))
    members = np.stack([flat(member_net("standard", seed=s)) for s in (1, 2)])
    aligned = align(members, ref, "standard")
    assert (aligned @ ref > members @ ref + 10).all()
    np.testing.assert_array_equal(np.sort(aligned, axis=1), np.sort(members, axis=1))
    x = torch.randn(4, 3, 32, 32)
    for before, after in zip(members, aligned):
        torch.testing.assert_close(logits_of("standard", after, x), logits_of("standard", before, x),
                                   atol=1e-5, rtol=1e-4)


def test_align_refuses_w_asym_even_when_forced():
    net = member_net("w_asym")
    for force in (False, True):
        with pytest.raises(ValueError, match=r"family='w_asym'.*fixed mask.*allowed: standard"):
            align(flat(net)[None], flat(net), "w_asym", force=force)


def test_align_refuses_sigma_asym_unless_forced_and_then_changes_its_function():
    net = member_net("sigma_asym", seed=5)
    twin = permute_params(net, random_permutations(0))
    with pytest.raises(ValueError, match=r"family='sigma_asym'.*allowed: standard, or force=True"):
        align(flat(twin)[None], flat(net), "sigma_asym")
    aligned = align(flat(twin)[None], flat(net), "sigma_asym", force=True)
    np.testing.assert_array_equal(aligned[0], flat(net))  # the same vector as the reference...
    x = torch.randn(4, 3, 32, 32)
    assert (logits_of("sigma_asym", aligned[0], x) - twin(x)).abs().max() > 1e-2  # ...not the twin's function


def test_align_validates_its_inputs():
    ref = flat(member_net("standard"))
    with pytest.raises(ValueError, match=r"weights shape=\(78042,\): must be \[n, 78042\]"):
        align(ref, ref, "standard")
    with pytest.raises(ValueError, match=r"reference shape=\(5,\)"):
        align(ref[None], ref[:5], "standard")
    with pytest.raises(ValueError, match="max_iter=0"):
        align(ref[None], ref, "standard", max_iter=0)
    with pytest.raises(ValueError, match="family='resnet'"):
        align(ref[None], ref, "resnet")


def test_zoo_weights_align_to_a_member(tmp_path):
    """`Zoo.weights(align_to=id)`: the reference row is unchanged, a permuted copy of it comes back equal."""
    from zoo.families.symmetry import RESNET8, permute_params
    from zoo.records import METRICS, MemberResult
    from zoo.store import commit, init_zoo, open_zoo

    nets = [zoo.init_weights(zoo.build("standard"), seed=s) for s in range(2)]
    perms = RESNET8.random(seed=5)
    flat = [zoo.flatten(n).numpy() for n in nets]
    permuted = zoo.flatten(permute_params(nets[0], perms)).numpy()
    init_zoo(str(tmp_path / "z"), zoo_seed=0, families={"standard": 0}, recipe={}, recipe_overrides={},
             data={"sha256": "0" * 64})
    results = [MemberResult(config=zoo.sample_member(0, i, "standard"), status="ok", diverged_epoch=None,
                            metrics={m: 0.5 for m in METRICS}, params_init=w, params_final=w, wall_time_s=0.0,
                            device="cpu", data_sha="0" * 64) for i, w in enumerate([flat[0], permuted, flat[1]])]
    commit(str(tmp_path / "z"), results)
    z = open_zoo(str(tmp_path / "z"))
    ref = results[0].config.member_id
    aligned, ids = z.weights("standard", align_to=ref)
    np.testing.assert_array_equal(aligned[list(ids).index(ref)], flat[0])
    np.testing.assert_allclose(aligned[list(ids).index(results[1].config.member_id)], flat[0], atol=0)
    assert not np.allclose(permuted, flat[0])
    with pytest.raises(ValueError, match="align_to='nope'"):
        z.weights("standard", align_to="nope")
