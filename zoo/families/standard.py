"""Standard ResNet-8: plain convs, plain linear head, ReLU. 78,042 trainable parameters."""
from __future__ import annotations

from . import layers
from .family import Family
from .resnet import Parts, ResNet8


def build(asym_seed: int = 0) -> ResNet8:
    """`asym_seed` is accepted for a uniform signature; the standard family has nothing fixed."""
    return ResNet8(Parts(conv=layers.plain_conv, linear=layers.plain_linear, act=layers.relu))


FAMILY = Family(name="standard", label="Standard ResNet-8", build=build)
