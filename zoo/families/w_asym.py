"""W-Asymmetric ResNet-8 (paper Section 4.1, eq. 2): fixed random weights break permutations.

Per output channel of every conv, N_FIX input channels have their whole filter fixed to
KAPPA * N(0, 1); the stem (3 inputs) is fully fixed. In the head, N_FIX of 64 inputs are fixed
per output row. Norm affines and biases stay trainable. 60,634 trainable and 17,408 fixed entries.
"""
from __future__ import annotations

from . import layers
from .family import Family
from .resnet import Parts, ResNet8

N_FIX = 8  # fixed input channels (conv) or inputs (linear) per output unit
KAPPA = 2.0  # std of the fixed entries F


def build(asym_seed: int = 0, *, n_fix: int = N_FIX, kappa: float = KAPPA) -> ResNet8:
    def conv(name, c_in, c_out, kernel, stride):
        rng = layers.layer_rng(asym_seed, name)
        return layers.MaskedConv2d(c_in, c_out, kernel, stride, rng=rng, n_fix=n_fix, kappa=kappa)

    def linear(name, d_in, d_out):
        rng = layers.layer_rng(asym_seed, name)
        return layers.MaskedLinear(d_in, d_out, rng=rng, n_fix=n_fix, kappa=kappa)

    return ResNet8(Parts(conv=conv, linear=linear, act=layers.relu))


FAMILY = Family(name="w_asym", label="W-Asym ResNet-8", build=build, options={"n_fix": N_FIX, "kappa": KAPPA},
                symmetric=False, companion_init="torch_default")
