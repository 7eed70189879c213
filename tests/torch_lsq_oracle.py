#!/usr/bin/python3
"""PyTorch oracle for nibble's learned quantizers, op by op
(tests/test_torch_lsq.c), and their PyTorch formulas (ALGORITHMS.md §4),
which tests/torch_quant_oracle.py imports for its LSQ ResNet-20:

  LSQ   y = round_pass(clamp(x / grad_scale(s, g), qmin, qmax)) * grad_scale(s, g)
  LSQ+  the same of x - grad_scale(beta, g), plus grad_scale(beta, g)
  PACT  c = min(max(x, alpha * qmin / qmax), alpha),
        y = c + (round(c / s) * s - c).detach(),  s = alpha / qmax

with grad_scale(s, g) = (s - s*g).detach() + s*g and round_pass(v) =
(v.round() - v).detach() + v. PACT's form gives its paper's gradient for
alpha (1 above the range, qmin / qmax below it, no rounding term); at an
exact end torch.minimum / torch.maximum split the gradient 0.5 / 0.5, so
the test data holds no PACT value exactly at an end (checked here).

    /usr/bin/python3 tests/torch_lsq_oracle.py IN.h5 OUT.h5

Exit status 77 when torch, numpy or h5py cannot be imported.

IN.h5 (root attribute cases) holds per case case<c>/: kind (0 LSQ, 1 LSQ+,
2 PACT), qrange (qmin, qmax), g, x, dy (the upstream gradient), step (one
per row of x viewed as (rows, K): s, or alpha for PACT) and for LSQ+
offset (beta). OUT.h5 per case: y, dx, dstep and for LSQ+ doffset, from
autograd; dstep_size and doffset_size, g * sum |dy * term| per row (the
size of the sums the tolerance is relative to).

The oracle runs in float64 on the float32 inputs: with the test's power-of-
two steps x / s is exact in both precisions, so every tie (k + 1/2)·s
rounds the same way and the sums come out exact up to float64 rounding.
It also checks its own autograd against the gradients the header of
quant/lsq.c documents, computed directly (numpy), and that grad_scale's
forward value is exactly s and beta (else a tie could round the other way).
"""
import sys

try:
    import h5py
    import numpy as np
    import torch
except ImportError as e:  # the test skips
    print("torch_lsq_oracle.py: %s" % e)
    sys.exit(77)

torch.set_num_threads(1)

LSQ, LSQ_PLUS, PACT = 0, 1, 2


def grad_scale(s, g):
    return (s - s * g).detach() + s * g


def round_pass(v):
    return (v.round() - v).detach() + v


def lsq(x, s, g, qmin, qmax, beta=None):
    """LSQ (beta None) or LSQ+ of x; s and beta broadcast against x."""
    sg = grad_scale(s, g)
    if beta is None:
        return round_pass(torch.clamp(x / sg, qmin, qmax)) * sg
    bg = grad_scale(beta, g)
    return round_pass(torch.clamp((x - bg) / sg, qmin, qmax)) * sg + bg


def pact(x, alpha, qmin, qmax):
    """PACT of x with clipping level alpha (s = alpha / qmax)."""
    c = torch.minimum(torch.maximum(x, alpha * qmin / qmax), alpha)
    s = alpha / qmax
    return c + (torch.round(c / s) * s - c).detach()


def documented(kind, x, dy, p, beta, g, qmin, qmax):
    """quant/lsq.c's formulas (float64 numpy, x and dy (rows, K), p and
    beta (rows, 1)): y, dx and the per-element terms of the two sums."""
    s = p / qmax if kind == PACT else p
    v = (x - beta) / s
    inside = (v >= qmin) & (v <= qmax)
    y = np.rint(np.clip(v, qmin, qmax)) * s + beta
    if kind == PACT:
        term = np.where(v >= qmax, 1.0, np.where(v <= qmin, qmin / qmax, 0.0))
    else:
        term = np.where(inside, np.rint(v) - v, np.clip(v, qmin, qmax))
    return y, dy * inside, dy * term, dy * (~inside)


def run_case(c, gout):
    kind = int(np.array(c["kind"]).reshape(-1)[0])
    qmin, qmax = (int(v) for v in np.array(c["qrange"]).reshape(-1))
    g = float(np.array(c["g"], dtype=np.float32).reshape(-1)[0])
    x32 = np.array(c["x"], dtype=np.float32)
    p32 = np.array(c["step"], dtype=np.float32).reshape(-1, 1)
    rows = p32.shape[0]
    x = torch.from_numpy(x32.astype(np.float64).reshape(rows, -1)).requires_grad_(True)
    dy = torch.from_numpy(np.array(c["dy"], dtype=np.float32).astype(np.float64).reshape(rows, -1))
    p = torch.from_numpy(p32.astype(np.float64)).requires_grad_(True)
    beta = None
    if kind == LSQ_PLUS:
        beta = torch.from_numpy(np.array(c["offset"], dtype=np.float32).astype(np.float64).reshape(-1, 1))
        beta.requires_grad_(True)
    gt = torch.tensor(g, dtype=torch.float64)
    for name, t in (("step", p), ("offset", beta)):
        if t is not None and kind != PACT and not torch.equal(grad_scale(t, gt).detach(), t.detach()):
            raise SystemExit("grad_scale(%s, %r) is not exactly %s in the forward: pick other values"
                             % (name, g, name))
    if kind == PACT:
        ends = (x.detach() == p.detach()) | (x.detach() == p.detach() * qmin / qmax)
        if bool(ends.any()):
            raise SystemExit("a PACT value lies exactly at an end, where torch.minimum/maximum split the "
                             "gradient: change the data")
        y = pact(x, p, qmin, qmax)
    else:
        y = lsq(x, p, gt, qmin, qmax, beta)
    y.backward(dy)

    # the autograd answer against the documented formulas
    b = beta.detach().numpy() if beta is not None else 0.0
    y_d, dx_d, ts, tb = documented(kind, x.detach().numpy(), dy.numpy(), p.detach().numpy(), b,
                                   g, qmin, qmax)
    gs = 1.0 if kind == PACT else g
    ds_d, db_d = gs * ts.sum(axis=1), gs * tb.sum(axis=1)
    s_scale, b_scale = gs * np.abs(ts).sum(axis=1), gs * np.abs(tb).sum(axis=1)
    checks = [("y", y.detach().numpy(), y_d, np.abs(y_d).max()),
              ("dx", x.grad.numpy(), dx_d, np.abs(dx_d).max()),
              ("dstep", p.grad.numpy().reshape(-1), ds_d, s_scale)]
    if beta is not None:
        checks.append(("doffset", beta.grad.numpy().reshape(-1), db_d, b_scale))
    for name, got, want, scale in checks:
        if np.any(np.abs(got - want) > 1e-9 * np.maximum(scale, 1e-30)):
            k = int(np.argmax(np.abs(got - want)))
            raise SystemExit("%s: autograd gives %r, the documented formula %r (element %d): the PyTorch form "
                             "and quant/lsq.c's gradients disagree" % (name, got.flat[k], want.flat[k], k))
        gout.create_dataset(name, data=got.astype(np.float32).reshape(-1))
    gout.create_dataset("dstep_size", data=s_scale)
    if beta is not None:
        gout.create_dataset("doffset_size", data=b_scale)


def main(run=run_case):
    """IN.h5 OUT.h5 from argv: run(case<c>/ of IN, case<c>/ of OUT) for every
    case (tests/torch_n2uq_oracle.py brings its own run)."""
    fin, fout = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "w")
    for c in range(int(fin.attrs["cases"])):
        run(fin["case%d" % c], fout.create_group("case%d" % c))
    fout.close()


if __name__ == "__main__":
    main()
