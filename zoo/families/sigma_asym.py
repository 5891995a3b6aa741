"""sigma-Asymmetric ResNet-8 (paper Section 4.2): every ReLU becomes FiGLU with its own fixed F.

78,042 trainable parameters, as the standard family; the F matrices are fixed buffers.
"""
from __future__ import annotations

from . import layers
from .family import Family
from .resnet import Parts, ResNet8


def build(asym_seed: int = 0) -> ResNet8:
    def figlu(name, channels):
        return layers.FiGLU(channels, rng=layers.layer_rng(asym_seed, name))

    return ResNet8(Parts(conv=layers.plain_conv, linear=layers.plain_linear, act=figlu))


FAMILY = Family(name="sigma_asym", label="σ-Asym ResNet-8", build=build, symmetric=False)
