
import pytest
import torch

import zoo
from conftest import run_python

EXPECTED_TRAINABLE = {"standard": 78042, "w_asym": 60634, "sigma_asym": 78042}


def member_net(arch, seed=0, asym_seed=0):
    return zoo.init_weights(zoo.build(arch, asym_seed=asym_seed), seed)


def fixed_entry_count(net) -> int:
    return sum(int((~b).sum()) for n, b in net.named_buffers() if n.endswith("_mask"))


def effective_weights(net) -> dict[str, torch.Tensor]:
    """The weights the forward pass uses (eq. 2 applied for masked layers)."""
    out = {}
    for name, m in net.named_modules():
        if hasattr(m, "weight_mask"):
            out[name] = torch.where(m.weight_mask, m.weight, m.weight_fixed).detach().clone()
    return out


@pytest.mark.parametrize("arch", list(EXPECTED_TRAINABLE))
def test_parameter_counts(arch):
    net = member_net(arch)
    lay = zoo.layout(net)
    assert lay.size == EXPECTED_TRAINABLE[arch] == zoo.flatten(net).numel()
    assert len(lay.tensors) == 29
    assert fixed_entry_count(net) == (17408 if arch == "w_asym" else 0)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_layout_offsets_are_contiguous():
    lay = zoo.layout(member_net("w_asym"))
    ends = [t.offset + t.size for t in lay.tensors]
    assert [t.offset for t in lay.tensors] == [0] + ends[:-1]
    assert lay.tensors[0].name == "stem.conv.weight" and lay.tensors[0].size == 0  # fully fixed stem
    assert lay.tensors[-1].name == "head.bias"


def test_fixed_entries_survive_optimizer_steps():
    net = member_net("w_asym", seed=3)
    before = effective_weights(net)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 3, 32, 32)).square().mean().backward()
        opt.step()
    after = effective_weights(net)
    for name, m in net.named_modules():
        if hasattr(m, "weight_mask"):
            fixed = ~m.weight_mask
            assert torch.equal(before[name][fixed], after[name][fixed]), name
            if m.weight_mask.any():
                assert not torch.equal(before[name][m.weight_mask], after[name][m.weight_mask]), name


@pytest.mark.parametrize("arch", list(EXPECTED_TRAINABLE))
def test_flatten_unflatten_round_trip(arch):
    src, dst = member_net(arch, seed=1), member_net(arch, seed=2)
    zoo.unflatten(dst, zoo.flatten(src))
    assert torch.equal(zoo.flatten(dst), zoo.flatten(src))
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(dst(x), src(x))
    with pytest.raises(ValueError, match="expected"):
        zoo.unflatten(dst, torch.zeros(5))


def test_unflatten_leaves_fixed_entries_untouched():
    net = member_net("w_asym")
    before = effective_weights(net)
    zoo.unflatten(net, torch.full((60634,), 7.0))
    for name, m in net.named_modules():
        if hasattr(m, "weight_mask"):
            fixed = ~m.weight_mask
            assert torch.equal(before[name][fixed], effective_weights(net)[name][fixed])


DIGEST = """
import hashlib, zoo
h = hashlib.sha256()
for arch in ("w_asym", "sigma_asym"):
    for name, b in zoo.build(arch, asym_seed={seed}).named_buffers():
        h.update(name.encode()); h.update(b.numpy().tobytes())
print(h.hexdigest())
"""


def test_asym_seed_is_reproducible_across_processes():
    first, second = run_python(DIGEST.format(seed=11)), run_python(DIGEST.format(seed=11))
    assert first == second
    assert run_python(DIGEST.format(seed=12)) != first


def test_asym_seed_changes_masks_and_f():
    a, b = zoo.build("w_asym", asym_seed=0), zoo.build("w_asym", asym_seed=1)
    assert not torch.equal(a.blocks[0].conv1.weight_mask, b.blocks[0].conv1.weight_mask)
    fa, fb = zoo.build("sigma_asym", asym_seed=0), zoo.build("sigma_asym", asym_seed=1)
    assert not torch.equal(fa.stem.act.mixing, fb.stem.act.mixing)
    with pytest.raises(ValueError, match="asym_seed"):
        zoo.build("w_asym", asym_seed=-1)


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match=r"family='resnet'.*standard, w_asym, sigma_asym"):
        zoo.build("resnet")


def test_init_is_a_function_of_the_seed():
    a, b = member_net("standard", seed=9), member_net("standard", seed=9)
    assert torch.equal(zoo.flatten(a), zoo.flatten(b))
    assert not torch.equal(zoo.flatten(a), zoo.flatten(member_net("standard", seed=10)))


def test_layout_json_round_trip_and_validation():
    lay = zoo.layout(member_net("w_asym"))
    assert zoo.Layout.from_json(lay.to_json()) == lay
    broken = lay.to_json()
    broken[1]["offset"] += 1
    with pytest.raises(ValueError, match="contiguous"):
        zoo.Layout.from_json(broken)


def test_companion_init_draws_the_companion_distributions():
    """W-Asym under the companion init: trainable entries ~ U(+-1/sqrt(fan_in)) (the companion's
    SparseResNet never calls its kaiming init), fixed entries untouched; standard keeps kaiming
    normal weights; every family's head bias ~ U(+-1/sqrt(64)) (nn.Linear's default)."""
    from scipy import stats

    from zoo.families import fixed_digest, init_weights

    net = zoo.build("w_asym")
    before = fixed_digest(net)
    init_weights(net, seed=3, scheme="companion", family="w_asym")
    assert fixed_digest(net) == before
    conv = net.blocks[2].conv2  # 64 -> 64, fan_in 576
    trainable = conv.weight[conv.weight_mask].detach().numpy()
    bound = 1 / 576 ** 0.5
    assert stats.kstest(trainable, stats.uniform(-bound, 2 * bound).cdf).pvalue > 1e-3
    assert stats.kstest(trainable, stats.norm(0, (2 / 576) ** 0.5).cdf).pvalue < 1e-6  # not kaiming normal
    assert (conv.weight[~conv.weight_mask] == 0).all()
    std = init_weights(zoo.build("standard"), seed=3, scheme="companion", family="standard")
    w = std.blocks[2].conv2.weight.detach().flatten().numpy()
    assert stats.kstest(w, stats.norm(0, (2 / 576) ** 0.5).cdf).pvalue > 1e-3
    for head in (net.head, std.head):
        assert stats.kstest(head.bias.detach().numpy(), stats.uniform(-1 / 8, 2 / 8).cdf).pvalue > 1e-3
        assert head.bias.abs().max() <= 1 / 8 and head.bias.abs().min() > 0
    kaiming = init_weights(zoo.build("standard"), seed=3)
    assert (kaiming.head.bias == 0).all()


def test_init_scheme_is_validated_and_recorded_in_the_recipe():
    from zoo.recipe import LEGACY, Recipe

    with pytest.raises(ValueError, match="init='xavier'"):
        Recipe(init="xavier")
    assert Recipe().init == "companion" and Recipe(init="kaiming_normal").overrides() == {"init": "kaiming_normal"}
    assert LEGACY["init"] == "kaiming_normal"  # what zoos made before the field existed used
