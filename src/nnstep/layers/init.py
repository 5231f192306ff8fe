"""torch's parameter initializations, as a layer names them in ``init`` (``{"bias": "bias"}``) and a
scenario chooses with ``[[layers]] init = "..."``. The loader draws every parameter a scenario
does not give with :func:`init_tensor`, from the scenario's seed; explain says how with
:func:`init_text`."""
from __future__ import annotations

import math

import numpy as np

CHOICES = ("kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal", "zeros")
"""What a scenario's ``init`` key may choose (for the parameters its layer type does not name)."""

KINDS = CHOICES + ("bias", "recurrent", "normal", "ones")
"""Every kind a layer type's ``init`` may name: the choices, and ``bias`` (torch's default bias,
U(−1/√fan_in, 1/√fan_in)), ``recurrent`` (nn.RNN's, U(−1/√H, 1/√H), with fans (H, H)), ``normal``
(nn.Embedding's N(0, 1)), ``ones`` (a normalization's γ)."""


def init_tensor(kind: str, shape, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """torch.nn.init, as the layers' reset_parameters() use it, in float64."""
    if kind in ("kaiming_uniform", "bias", "recurrent"):
        # "recurrent": nn.RNN / nn.LSTM's reset_parameters, uniform(-1/sqrt(hidden), 1/sqrt(hidden))
        # for every parameter; their fans are (hidden, hidden)
        # kaiming_uniform_(a=sqrt(5)) gives bound = gain*sqrt(3/fan_in) with gain = sqrt(2/(1+5)):
        # exactly 1/sqrt(fan_in); torch's bias init uses the same bound.
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        return rng.uniform(-bound, bound, size=shape)
    if kind == "kaiming_normal":           # kaiming_normal_(a=0, mode=fan_in, relu): std = sqrt(2/fan_in)
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    if kind == "xavier_uniform":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-bound, bound, size=shape)
    if kind == "xavier_normal":
        return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)
    if kind == "normal":                   # nn.Embedding: normal_(0, 1)
        return rng.normal(0.0, 1.0, size=shape)
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "ones":
        return np.ones(shape)
    raise ValueError(kind)


def init_text(kind: str, fans: tuple[int, int], seed: int) -> str:
    """How a parameter was drawn, in words, with its bound or spread (for explain)."""
    fan_in, fan_out = fans
    drawn = f"drawn at load from the scenario's seed ({seed}) with "
    if kind in ("kaiming_uniform", "bias", "recurrent"):
        b = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        what = {"kaiming_uniform": "torch's default init, kaiming_uniform(a = √5)", "bias": "torch's default bias init",
                "recurrent": "torch's nn.RNN / nn.LSTM init"}[kind]
        n = "hidden" if kind == "recurrent" else "fan_in"
        return f"{drawn}{what}: U(−1/√{n}, 1/√{n}), {n} = {fan_in}, so U(−{b:.6g}, {b:.6g})"
    if kind == "kaiming_normal":
        return f"{drawn}kaiming_normal: N(0, 2/fan_in), fan_in = {fan_in}, so std {math.sqrt(2.0 / fan_in):.6g}"
    if kind == "xavier_uniform":
        b = math.sqrt(6.0 / (fan_in + fan_out))
        return (f"{drawn}xavier_uniform: U(−√(6/(fan_in + fan_out)), √(6/(fan_in + fan_out))), fan_in = {fan_in}, "
                f"fan_out = {fan_out}, so U(−{b:.6g}, {b:.6g})")
    if kind == "xavier_normal":
        return (f"{drawn}xavier_normal: N(0, 2/(fan_in + fan_out)), fan_in = {fan_in}, fan_out = {fan_out}, so std "
                f"{math.sqrt(2.0 / (fan_in + fan_out)):.6g}")
    if kind == "normal":
        return f"{drawn}nn.Embedding's init: N(0, 1)"
    if kind == "ones":
        return "torch's init: ones (a normalization's γ starts at 1)"
    return "its init: zeros (as torch starts a normalization's β and attention's biases; or init = \"zeros\")"
