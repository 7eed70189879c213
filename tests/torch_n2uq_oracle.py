#!/usr/bin/python3
"""PyTorch oracle for nibble's N2UQ activation quantizer (quant/n2uq.c,
tests/test_torch_n2uq.c), written as a PyTorch user would, with autograd
doing the calculus:

  T = t0 + [0, cumsum(a)]                     (t0, a, s through grad_scale(., g))
  F = [x >= T_1] + sum_k clamp((x - T_k) / a_k, 0, 1),  k = 1..n-1
  q = #{i : x >= T_i}                         (no gradient)
  y = s * q + s.detach() * (F - F.detach())

so y = s*q forward, dy/ds = q, and x, t0 and a get s times the gradient of
the surrogate F (which is i + (x - T_i)/a_i in interval i); grad_scale(p,
g) = (p - p*g).detach() + p*g (tests/torch_lsq_oracle.py's) scales the
parameters' gradients by g. The
oracle checks q = floor(F) on its data (which keeps clear of the
thresholds, where the clamps' inclusive ends would both pass a gradient).

    /usr/bin/python3 tests/torch_n2uq_oracle.py IN.h5 OUT.h5

Exit status 77 when torch, numpy or h5py cannot be imported.

IN.h5 (root attribute cases) holds per case case<c>/: x, dy (the upstream
gradient), t0 (1), a (n - 1), s (1), g (1). OUT.h5 per case: y, dx, dt0,
da, ds from autograd in float64, and dt0_size, da_size, ds_size: the same
gradients for |dy|, in absolute value, which is g * sum |dy * s * dF/dp|
(each dF/dt0 and dF/da_j has one sign over all x) and g * sum |dy| * q: the
scale of each sum's float error.
"""
import sys

try:
    import numpy as np
    import torch
except ImportError as e:  # the test skips
    print("torch_n2uq_oracle.py: %s" % e)
    sys.exit(77)

from torch_lsq_oracle import grad_scale, main  # exits with 77 as well


def n2uq(x, t0, a, s, g):
    t0g, ag, sg = grad_scale(t0, g), grad_scale(a, g), grad_scale(s, g)
    T = torch.cat([t0g, t0g + torch.cumsum(ag, 0)])
    F = (x >= T[0]).double() + torch.clamp((x[:, None] - T[None, :-1]) / ag[None, :], 0.0, 1.0).sum(1)
    q = (x.detach()[:, None] >= T.detach()[None, :]).sum(1).double()
    if not torch.equal(torch.floor(F.detach()), q):
        raise SystemExit("q != floor(F) on the data: keep x clear of the thresholds")
    return sg * q + sg.detach() * (F - F.detach())


def grads(x32, dy, t0_32, a32, s32, g):
    leaves = [torch.from_numpy(v.astype(np.float64)).requires_grad_(True) for v in (x32, t0_32, a32, s32)]
    x, t0, a, s = leaves
    y = n2uq(x, t0, a, s, torch.tensor(g, dtype=torch.float64))
    y.backward(torch.from_numpy(dy))
    return y.detach().numpy(), [v.grad.numpy() for v in leaves]


def run_case(c, gout):
    f32 = lambda name: np.array(c[name], dtype=np.float32).reshape(-1)
    x32, dy = f32("x"), f32("dy").astype(np.float64)
    t0, a, s, g = f32("t0"), f32("a"), f32("s"), float(f32("g")[0])
    y, (dx, dt0, da, ds) = grads(x32, dy, t0, a, s, g)
    _, sizes = grads(x32, np.abs(dy), t0, a, s, g)
    for name, v in (("y", y), ("dx", dx), ("dt0", dt0), ("da", da), ("ds", ds)):
        gout.create_dataset(name, data=v.astype(np.float32))
    for name, v in zip(("dt0", "da", "ds"), sizes[1:]):
        gout.create_dataset(name + "_size", data=np.abs(v))


if __name__ == "__main__":
    main(run_case)
