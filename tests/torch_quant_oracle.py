#!/usr/bin/python3
"""PyTorch oracle for nibble's fake-quantized CIFAR ResNets
(tests/test_torch_quant.c): the same network in float32 where, before every
conv/linear, the input goes through torch.fake_quantize_per_tensor_affine
and the weight through torch.fake_quantize_per_channel_affine (axis 0) or
torch.fake_quantize_per_tensor_affine, with the scales, zero points and
integer ranges nibble used. In an LSQ case (case<c>/lsq = 1) every
quantizer is LSQ instead, the detach-trick formula of
tests/torch_lsq_oracle.py with a trained step (a leaf tensor per quantizer,
initialised to nibble's /quant/ scale) and the documented gradient scale g =
1/sqrt(N·Qp): N the weights per step for a weight, the features per example
(numel / batch) for an input; the step sizes' gradients are part of the
answer.

    /usr/bin/python3 tests/torch_quant_oracle.py IN.h5 OUT.h5

Exit status 77 when torch, numpy or h5py cannot be imported.

IN.h5 (root attributes arch, shortcut, classes, cases) holds, per case
case<c>/: training (1: batch statistics, 0: running ones), lsq (1: LSQ
quantizers), tries, and that many independent draws try<k>/:
  x, labels                      the batch
  model/<state_dict name>        the model before the step
  quant/<quantizer>/scale, zero_point, qrange   per quantizer, named
                                 "<layer>.weight" / "<layer>.input"; a weight
                                 quantizer with one scale is per-tensor, else
                                 per-channel (axis 0)
  nb_in/<layer>.input            what nibble's input quantizers received
  nb_out/<quantizer>             what every quantizer of nibble's returned

OUT.h5: case<c>/done (draws computed: up to and including the first clean
one) and per draw case<c>/try<k>/:
  logits, loss, dx, grad/<param>, after/<buffer>   PyTorch's step
  qgrad/<quantizer>              LSQ: the gradient of its step size(s)
  qgrad_size/<quantizer>         LSQ: g·Σ|dy·term| per step (float64), the
                                 size of the sum behind it
  status = [clean, flips, bad, relu_margin, tie_margin, near_ties,
            act_disc, unchecked]
  report                         text (uint8): what was found

Codes. A value near a rounding boundary k + 1/2 can round either way in
the two programs: nibble divides by the scale where PyTorch multiplies by
1/scale (1-2 ulp apart), and the activations reach a quantizer through
convolutions summed in different orders (observed: within 1e-6 of the
tensor's largest value). With ~10^5 activations and ~3·10^5 weights some
value is always within ~1e-5 steps of a boundary (`tie_margin`; ~60 within
1e-4 steps, `near_ties`), so a minimum-margin rule would reject every draw.
Instead the codes themselves are compared, element by element, for every
quantizer in forward order:
  * nibble's weight scales and zero points against the documented rule
    applied to the weights (float32, exact);
  * nibble's output against clamp(rint(x / s) + z) of its own input (numpy
    float32, ties to even: exact), and PyTorch's op on nibble's input
    against it, forward code and backward mask, except within TIE steps of
    a boundary;
  * PyTorch's codes and masks (its op on its own input) against nibble's,
    up to the first quantizer where they differ. A difference where both
    values are within float rounding of the boundary (TIE steps, or
    TIE_REL of the tensor's largest |x / s| when that is more) is a
    legitimate flip (`flips`): every quantizer after it sees different
    numbers (not compared: `unchecked`) and the draw is not clean.
For LSQ the code is rint(clamp(x / s)) and the mask the inclusive qmin <= x
/ s <= qmax of the unrounded value (not of the rounded code, as for
fake_quantize), so the boundaries that matter are the ties k + 1/2 inside
the range and the two ends themselves; a value exactly 0 (a ReLU's output)
is exact in both programs and no boundary. The step-size gradient's term
round(x/s) - x/s jumps by 1 at a tie and between 0 and qmin or qmax at an
end: a flip changes it by dy (or qmax·dy) for that element, so only a draw
without flips compares the step-size gradients too.
Anything else is a bug (`bad`, described in `report`). A draw is clean when
no code or mask differs anywhere, nothing is bad and no ReLU input is within
RELU_TIE of 0 (the ReLU's backward mask could flip, as in
tests/torch_oracle.py). On a clean draw every quantized tensor holds the
same integers in both programs, so logits, loss and gradients differ only
by float32 summation order.
"""
import sys

try:
    import h5py
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # the test skips
    print("torch_quant_oracle.py: %s" % e)
    sys.exit(77)

from torch_lsq_oracle import LSQ, documented, lsq  # exits with 77 as well

torch.set_num_threads(1)

TIE = 1e-4        # steps from a rounding boundary within which either side may be taken
TIE_REL = 1e-5    # ... or this fraction of the largest |x / s| of the tensor (activations)
RELU_TIE = 3e-6   # |ReLU input| below which the backward mask may flip

RELU_MARGIN = [float("inf")]
ORDER = []  # the quantized modules in the order the forward called them


def relu(x):
    RELU_MARGIN[0] = min(RELU_MARGIN[0], x.detach().abs().min().item())
    return F.relu(x)


class QParams:
    """One quantizer's grid, as nibble exported it; an LSQ quantizer's step
    (its scale) is a leaf tensor that collects a gradient."""

    def __init__(self, g, name, is_lsq):
        self.name = name
        self.lsq = is_lsq
        self.scale = np.array(g["scale"], dtype=np.float32).reshape(-1)
        zp = np.array(g["zero_point"], dtype=np.float32).reshape(-1)
        if not np.all(zp == np.rint(zp)):
            raise SystemExit("%s: zero point %s is not an integer" % (name, zp))
        self.zp = zp.astype(np.int64)
        qr = np.array(g["qrange"], dtype=np.float32).reshape(-1)
        self.qmin, self.qmax = int(qr[0]), int(qr[1])
        self.per_channel = self.scale.size > 1
        if is_lsq:
            if np.any(self.zp != 0):
                raise SystemExit("%s: LSQ with zero point %s" % (name, self.zp))
            self.step = torch.from_numpy(self.scale.copy()).requires_grad_(True)

    def grad_scale(self, x):
        """LSQ's g = 1/sqrt(N·Qp) for x (float32, as nibble holds it)."""
        n = x.numel() / self.scale.size if self.name.endswith(".weight") else x.numel() / x.shape[0]
        return torch.tensor(1.0 / np.sqrt(n * self.qmax), dtype=torch.float32)

    def fq(self, x, detached=False):
        """PyTorch's fake quantization of x with this grid (LSQ: the step
        detached from its leaf when asked)."""
        if self.lsq:
            s = self.step.detach() if detached else self.step
            s = s.reshape((-1,) + (1,) * (x.dim() - 1)) if self.per_channel else s.reshape(())
            y = lsq(x, s, self.grad_scale(x), self.qmin, self.qmax)
            if not detached:
                y.retain_grad()
                self.seen_xy = (x.detach(), y)
            return y
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(
                x, torch.from_numpy(self.scale), torch.from_numpy(self.zp.astype(np.int32)), 0, self.qmin,
                self.qmax)
        return torch.fake_quantize_per_tensor_affine(x, float(self.scale[0]), int(self.zp[0]), self.qmin, self.qmax)

    def step_grad_size(self):
        """After the backward: g·Σ|dy·term| per step (float64), the size of
        the sums behind the step's gradient (term: round(v) - v inside,
        qmin / qmax beyond), from what the quantizer saw."""
        x, y = self.seen_xy
        rows = self.scale.size
        g = float(self.grad_scale(x))
        _, _, terms, _ = documented(LSQ, x.double().numpy().reshape(rows, -1), y.grad.double().numpy().reshape(
            rows, -1), self.scale.astype(np.float64).reshape(rows, 1), 0.0, g, self.qmin, self.qmax)
        return g * np.abs(terms).sum(axis=1)

    def bcast(self, a, ndim):
        """A per-channel array shaped to broadcast along axis 0 of an ndim tensor."""
        return a.reshape((-1,) + (1,) * (ndim - 1)) if self.per_channel else a.reshape(())


class QMixin:
    """Records what reaches the quantizers; `q` maps "input"/"weight" to QParams."""

    def quant(self, x):
        self.seen = {"input": x.detach().clone(), "weight": self.weight.detach().clone()}
        ORDER.append(self)
        return self.q["input"].fq(x), self.q["weight"].fq(self.weight)


class QConv2d(QMixin, nn.Conv2d):
    def forward(self, x):
        xq, wq = self.quant(x)
        return F.conv2d(xq, wq, self.bias, self.stride, self.padding)


class QLinear(QMixin, nn.Linear):
    def forward(self, x):
        xq, wq = self.quant(x)
        return F.linear(xq, wq, self.bias)


class Block(nn.Module):
    def __init__(self, cin, cout, stride, shortcut):
        super().__init__()
        self.conv1 = QConv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = QConv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = 0
        self.stride = stride
        if stride != 1 or cin != cout:
            if shortcut == "A":
                self.pad = cout - cin
            else:
                self.downsample = nn.Sequential(QConv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x
        if hasattr(self, "downsample"):
            sc = self.downsample(x)
        elif self.pad:
            sc = x[:, :, ::self.stride, ::self.stride]
            sc = F.pad(sc, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return relu(out + sc)


ARCHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}


class ResNet(nn.Module):
    """CIFAR ResNet (16/32/64 channels), names as nibble's state dict."""

    def __init__(self, arch, shortcut, classes):
        super().__init__()
        n, widths = ARCHS[arch], [16, 32, 64]
        self.conv1 = QConv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for s, w in enumerate(widths):
            layer = []
            for i in range(n):
                layer.append(Block(cin, w, (1 if s == 0 else 2) if i == 0 else 1, shortcut))
                cin = w
            setattr(self, "layer%d" % (s + 1), nn.Sequential(*layer))
        self.fc = QLinear(cin, classes)

    def forward(self, x):
        x = relu(self.bn1(self.conv1(x)))
        for s in range(3):
            x = getattr(self, "layer%d" % (s + 1))(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def attr(f, k):
    v = f.attrs[k]
    return v.decode() if isinstance(v, bytes) else v


def load_model(fin, g, training, is_lsq):
    m = ResNet(attr(fin, "arch"), attr(fin, "shortcut"), int(attr(fin, "classes")))
    sd = m.state_dict()
    for k in sd:
        sd[k].copy_(torch.from_numpy(np.array(g["model/" + k])).reshape(sd[k].shape).to(sd[k].dtype))
    for name, mod in m.named_modules():
        if isinstance(mod, QMixin):
            mod.q = {side: QParams(g["quant/%s.%s" % (name, side)], "%s.%s" % (name, side), is_lsq)
                     for side in ("input", "weight")}
    m.train(training)
    return m


def torch_codes(q, x):
    """PyTorch's extended codes for x: clamp(rint(x / s) + z) where the
    backward's mask passes, qmin - 1 / qmax + 1 where it blocks (the two
    things the forward and the STE depend on)."""
    xg = x.detach().clone().requires_grad_(True)
    y = q.fq(xg, detached=True)
    y.backward(torch.ones_like(y))
    y, mask = y.detach().numpy().astype(np.float64), xg.grad.numpy()
    s = q.bcast(q.scale.astype(np.float64), y.ndim)
    z = q.bcast(q.zp.astype(np.float64), y.ndim)
    c = np.rint(y / s) + z
    return np.where(mask != 0, c, np.where(c >= q.qmax, q.qmax + 1, q.qmin - 1))


def formula_codes(q, x):
    """clip(rint(x / s) + z, qmin - 1, qmax + 1) in float32, as nibble
    documents it (x / s, ties to even); LSQ: rint(x / s) where qmin <= x / s
    <= qmax, else qmin - 1 / qmax + 1."""
    x = np.asarray(x, dtype=np.float32)
    s = q.bcast(q.scale, x.ndim)
    if q.lsq:
        v = x / s
        return np.where(v < q.qmin, q.qmin - 1, np.where(v > q.qmax, q.qmax + 1, np.rint(v))).astype(np.float64)
    z = q.bcast(q.zp.astype(np.float32), x.ndim)
    return np.clip(np.rint(x / s) + z, q.qmin - 1, q.qmax + 1).astype(np.float64)


def out_codes(q, y):
    """Codes of a fake-quantized tensor y = s (c - z)."""
    y = np.asarray(y, dtype=np.float64)
    return np.rint(y / q.bcast(q.scale.astype(np.float64), y.ndim)) + q.bcast(q.zp.astype(np.float64), y.ndim)


def boundary_distance(q, x):
    """Distance in steps of every x / s from the nearest k + 1/2 that matters
    (qmin - 1/2 .. qmax + 1/2 in code units); inf for the others."""
    x = np.asarray(x, dtype=np.float64)
    v = x / q.bcast(q.scale.astype(np.float64), x.ndim)
    d = np.abs(v - np.floor(v) - 0.5)
    if q.lsq:  # ties inside the range, and the ends (the mask); exact zeros are exact
        d = np.where((v > q.qmin) & (v < q.qmax), d, np.inf)
        d = np.minimum(d, np.minimum(np.abs(v - q.qmin), np.abs(v - q.qmax)))
        return np.where(x == 0, np.inf, d)
    zb = q.bcast(q.zp.astype(np.float64), x.ndim)
    inside = (v + zb >= q.qmin - 1) & (v + zb <= q.qmax + 1)
    return np.where(inside, d, np.inf)


def expected_weight_grid(q, w):
    """The scale and zero point nibble's documented rule gives for w (range
    widened to contain 0; symmetric s = max(|lo|, |hi|) / qmax, asymmetric s
    = (hi - lo) / (qmax - qmin), z = clamp(rint(-lo / s))), float32."""
    w = np.asarray(w, dtype=np.float32).reshape(q.scale.size, -1)
    if q.lsq:  # LSQ's initial step 2·mean|w| / sqrt(Qp), in double
        mean = np.abs(w.astype(np.float64)).sum(axis=1) / w.shape[1]
        return (2.0 * mean / np.sqrt(float(q.qmax))).astype(np.float32), np.zeros(q.scale.size)
    lo = np.minimum(w.min(axis=1), np.float32(0))
    hi = np.maximum(w.max(axis=1), np.float32(0))
    if q.qmin < 0:  # symmetric (weights are signed: asymmetric grids are [0, 2^b - 1])
        s = np.maximum(-lo, hi) / np.float32(q.qmax)
        z = np.zeros_like(s)
    else:
        s = (hi - lo) / np.float32(q.qmax - q.qmin)
        z = np.clip(np.rint(-lo / s), q.qmin, q.qmax)
    return s.astype(np.float32), z


def where(x, idx):
    """The index of flat element idx of x, as a list."""
    return str([int(a) for a in np.unravel_index(idx, x.shape)])


def analyse(g, order):
    """The checks described at the top, for one draw, quantizers in forward
    order. Returns (status list, report lines)."""
    report, bad = [], 0
    flips = unchecked = near = 0
    tie_margin, act_disc = float("inf"), 0.0
    clean_so_far = True
    for mod in order:
        flipped_here = False
        for side in ("input", "weight"):
            q = mod.q[side]
            t_in = mod.seen[side].numpy()
            # a weight quantizer receives the weight itself (model/; the C side checks)
            nb_in = t_in if side == "weight" else np.array(g["nb_in/" + q.name], dtype=np.float32)
            nb_in = nb_in.reshape(t_in.shape)
            nb_out = np.array(g["nb_out/" + q.name], dtype=np.float32).reshape(t_in.shape)
            d_nb = boundary_distance(q, nb_in)
            tie_margin = min(tie_margin, float(d_nb.min()))
            near += int((d_nb < TIE).sum())
            if side == "weight":
                s, z = expected_weight_grid(q, nb_in)
                # (LSQ: a sum in another order may end one float32 ulp away)
                wrong = np.flatnonzero((np.abs(s - q.scale) > (np.spacing(s) if q.lsq else 0)) | (z != q.zp))
                if wrong.size:
                    bad += 1
                    k = wrong[0]
                    report.append("%s: channel %d has scale %.9g, zero point %d; its weights give %.9g, %d "
                                  "(%d such)" % (q.name, k, q.scale[k], q.zp[k], s[k], int(z[k]), wrong.size))
            # nibble's output against the formula on its own input
            f_nb = formula_codes(q, nb_in)
            o_nb = out_codes(q, nb_out)
            diff = np.flatnonzero(np.clip(f_nb, q.qmin, q.qmax) != o_nb)
            if diff.size:
                bad += 1
                k = diff[0]
                report.append("%s: nibble's output at %s has code %g, not clamp(rint(x / s) + z) = %g of its "
                              "input %.9g (%d such)" % (q.name, where(nb_in, k), o_nb.flat[k], f_nb.flat[k],
                                                        nb_in.flat[k], diff.size))
            # PyTorch's op on nibble's input: the same codes and masks up to ties
            t_nb = torch_codes(q, torch.from_numpy(nb_in))
            diff = np.flatnonzero((t_nb != f_nb) & (d_nb >= TIE))
            if diff.size:
                bad += 1
                k = diff[0]
                report.append("%s: on nibble's input %.9g at %s PyTorch's op gives code %g, nibble's %g "
                              "(beyond qmin/qmax: masked in the backward), %.3g steps from a rounding boundary "
                              "(%d such)" % (q.name, nb_in.flat[k], where(nb_in, k), t_nb.flat[k], f_nb.flat[k],
                                             d_nb.flat[k], diff.size))
            # PyTorch's codes on its own input against nibble's
            if side == "input" and not clean_so_far:
                unchecked += 1
                continue
            steps = q.bcast(q.scale.astype(np.float64), t_in.ndim)
            tol = TIE
            if side == "input":
                act_disc = max(act_disc, float(np.abs((t_in.astype(np.float64) - nb_in) / steps).max()))
                tol = max(TIE, TIE_REL * float(np.abs(nb_in / steps).max()))
            t_own = t_nb if side == "weight" else torch_codes(q, mod.seen[side])
            d_t = boundary_distance(q, t_in)
            diff = np.flatnonzero(t_own != f_nb)
            if not diff.size:
                continue
            flipped_here = True
            legit = (d_t.flat[diff] < tol) & (d_nb.flat[diff] < tol)
            k = diff[0] if np.all(legit) else diff[np.flatnonzero(~legit)[0]]
            msg = ("%s: PyTorch's code %g (from %.9g) and nibble's %g (from %.9g) differ at %s, %.3g and %.3g "
                   "steps from a rounding boundary" % (q.name, t_own.flat[k], t_in.flat[k], f_nb.flat[k],
                                                       nb_in.flat[k], where(t_in, k), d_t.flat[k], d_nb.flat[k]))
            if np.all(legit):
                flips += int(diff.size)
                report.append("%s (%d such, all within %.2g steps: a legitimate flip, end-to-end values not "
                              "comparable for this draw)" % (msg, diff.size, tol))
            else:
                bad += 1
                report.append("%s, beyond %.2g (%d differ)" % (msg, tol, diff.size))
        if flipped_here:
            clean_so_far = False
    relu_margin = RELU_MARGIN[0]
    if relu_margin < RELU_TIE:
        report.append("a ReLU input is %.3g from 0: its backward mask may differ, end-to-end gradients not "
                      "comparable for this draw" % relu_margin)
    clean = int(flips == 0 and bad == 0 and relu_margin >= RELU_TIE)
    status = [clean, flips, bad, relu_margin, tie_margin, near, act_disc, unchecked]
    return status, report


def run_try(fin, g, training, is_lsq, gout):
    """One draw: PyTorch's step and the code checks, written to gout.
    Returns whether the draw is clean."""
    ORDER.clear()
    RELU_MARGIN[0] = float("inf")
    m = load_model(fin, g, training, is_lsq)
    x = torch.from_numpy(np.array(g["x"], dtype=np.float32)).requires_grad_(True)
    labels = torch.from_numpy(np.array(g["labels"], dtype=np.int64))
    logits = m(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    out = {"logits": logits, "loss": loss.reshape(1), "dx": x.grad}
    for k, p in m.named_parameters():
        out["grad/" + k] = p.grad
    for k, v in m.named_buffers():
        out["after/" + k] = v.to(torch.float32)
    for mod in ORDER:
        for q in mod.q.values():
            if q.lsq:
                out["qgrad/" + q.name] = q.step.grad
                gout.create_dataset("qgrad_size/" + q.name, data=q.step_grad_size())
    for k, v in out.items():
        gout.create_dataset(k, data=v.detach().numpy().astype(np.float32))
    status, report = analyse(g, ORDER)
    gout.create_dataset("status", data=np.array(status, dtype=np.float64))
    text = "; ".join(report[:4]) + ("; ..." if len(report) > 4 else "")
    gout.create_dataset("report", data=np.frombuffer((text or "ok").encode(), dtype=np.uint8))
    return status[0] == 1


def main():
    fin, fout = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "w")
    for c in range(int(attr(fin, "cases"))):
        case = fin["case%d" % c]
        training = bool(np.array(case["training"]).reshape(-1)[0])
        is_lsq = "lsq" in case and bool(np.array(case["lsq"]).reshape(-1)[0])
        tries = int(np.array(case["tries"]).reshape(-1)[0])
        done = 0
        while done < tries:
            clean = run_try(fin, case["try%d" % done], training, is_lsq,
                            fout.create_group("case%d/try%d" % (c, done)))
            done += 1
            if clean:
                break
        fout.create_dataset("case%d/done" % c, data=np.array([done], dtype=np.float64))
    fout.close()


if __name__ == "__main__":
    main()
