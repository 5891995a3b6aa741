"""symzoo's model zoo: the three ResNet-8 families, their weight space, members and data.

Public API:
    build(arch, asym_seed=0) -> nn.Module        the network of family `arch`
    init_weights(net, seed) -> nn.Module          a member's seeded initialisation
    flatten(net) -> Tensor[P]                     trainable entries, canonical order
    unflatten(net, vec) -> nn.Module              write them back; fixed entries untouched
    layout(net) -> Layout                         per-tensor names, shapes, offsets, sizes
    sample_member(zoo_seed, index, family) -> MemberConfig   paper Table 8, pure
    load_cifar10(root=None, download=False) -> Cifar10
    open_zoo(path) -> zoo.store.Zoo                read a model zoo from the weight store
    align(weights, reference, family) -> [n, P]    weight matching (Git Re-Basin) to one reference
"""
from .alignment import align
from .data import Cifar10, DataError, load_cifar10
from .layout import Layout, TensorSpec, flatten, layout, unflatten
from .members import MemberConfig, sample_member
from .families import FAMILIES, build, init_weights
from .store import open_zoo

__all__ = [
    "FAMILIES", "Cifar10", "align", "DataError", "Layout", "MemberConfig", "TensorSpec", "build", "flatten",
    "init_weights", "layout", "load_cifar10", "open_zoo", "sample_member", "unflatten",
]
