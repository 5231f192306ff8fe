"""Backpropagation by hand, in numpy: the network of net.toml, forward, backward and SGD update.

This is the exercise every course sets: write the backward pass yourself. This file has ONE
deliberate bug, the kind almost everyone makes once. Find it with nnstep:

    python mine.py                       # writes mine.npz beside this file
    nnstep compare net.toml mine.npz     # the first operation where these numbers leave nnstep's

(The answer is at the very end of this file. Try the compare first.)

mine.npz holds every value this file computes, under nnstep's tensor names (nnstep trace
net.toml lists them all): "linear1.out" is step 1's, "2/linear1.out" step 2's. Layouts are
torch's, as nnstep's: a weight is (out, in) and a layer computes out = in @ W.T + b.
"""
import os
import sys

import numpy as np

# --- the scenario, copied from net.toml ------------------------------------------------------------
LN3 = np.log(3.0)                       # σ(ln 3) = 3/4
X = np.array([[1.0, 0.0], [0.0, 1.0]])  # 2 samples, 2 features (batch first)
Y = np.array([[1.0, 0.0], [0.0, 1.0]])  # targets
W1 = np.array([[LN3, 0.0], [0.0, -LN3], [-LN3, LN3]])    # (3, 2): hidden layer, 2 -> 3
b1 = np.zeros(3)
W2 = np.array([[1.0, 1.0, 1.0], [-1.0, 0.0, 1.0]])        # (2, 3): output layer, 3 -> 2
b2 = np.zeros(2)
LR = 0.5
STEPS = 2


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


saved = {}


def save(step, name, value):
    """Keep a value under nnstep's name: "<name>" at step 1, "<step>/<name>" after."""
    saved[name if step == 1 else f"{step}/{name}"] = np.array(value)


for step in range(1, STEPS + 1):
    # --- forward ----------------------------------------------------------------------------------
    z1 = X @ W1.T + b1                  # linear1.out, (N, 3)
    h = sigmoid(z1)                     # sigmoid1.out
    z2 = h @ W2.T + b2                  # linear2.out, (N, 2): the prediction
    n = z2.size                         # MSELoss's mean is over every element: N · 2 = 4
    loss = np.sum((z2 - Y) ** 2) / n    # loss

    # --- backward: dLoss/d(every tensor), from the loss back to the input -------------------------
    g2 = 2.0 * (z2 - Y) / n             # loss.grad = dLoss/d(linear2.out)
    dW2 = g2.T @ h                      # linear2.weight.grad, (2, 3) like W2
    db2 = g2.sum(axis=0)                # linear2.bias.grad: summed over the batch
    gh = g2 @ W2                        # linear2.grad_in = sigmoid1.grad_out, dLoss/dh
    gz1 = gh                            # sigmoid1.grad_in = dLoss/d(linear1.out)
    dW1 = gz1.T @ X                     # linear1.weight.grad, (3, 2) like W1
    db1 = gz1.sum(axis=0)               # linear1.bias.grad

    # --- update: plain SGD, after every gradient is known -----------------------------------------
    W1, b1 = W1 - LR * dW1, b1 - LR * db1
    W2, b2 = W2 - LR * dW2, b2 - LR * db2

    for name, value in [("linear1.out", z1), ("sigmoid1.out", h), ("linear2.out", z2), ("loss", loss),
                        ("loss.grad", g2), ("linear2.weight.grad", dW2), ("linear2.bias.grad", db2),
                        ("sigmoid1.grad_out", gh), ("sigmoid1.grad_in", gz1),
                        ("linear1.weight.grad", dW1), ("linear1.bias.grad", db1),
                        ("linear1.weight", W1), ("linear1.bias", b1), ("linear2.weight", W2), ("linear2.bias", b2)]:
        save(step, name, value)

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "mine.npz")
np.savez(out, **saved)
print(f"wrote {len(saved)} tensors of {STEPS} steps to {out}")
print(f"step {STEPS}: loss {loss:.6f}")

# -------------------------------------------------------------------------------------------------
# The answer. `nnstep compare` names "backward sigmoid1", tensor sigmoid1.grad_in, and its hint says
# it equals sigmoid1.grad_out: the line
#     gz1 = gh
# forgets the sigmoid's local derivative, σ'(z1) = h·(1 − h). The chain rule multiplies it in:
#     gz1 = gh * h * (1.0 - h)
# Everything computed from gz1 after it (linear1's gradients, then step 2's numbers) differs too, only
# because of it: fix the first difference, run both commands again, and they all agree.
