#!/usr/bin/python3
"""PyTorch oracle for nibble's tests: reads a case from IN.h5, computes the
same op or model forward/backward in PyTorch (float32, 1 thread) and writes
the results to OUT.h5.

    /usr/bin/python3 tests/torch_oracle.py IN.h5 OUT.h5

Cases (root attribute `case`):
  conv    x, w, [b], dy; attrs stride, pad            -> y, dx, dw, [db]
  bn      x, gamma, beta, running_mean, running_var, dy;
          attrs training, momentum, eps               -> y, dx, dgamma, dbeta,
                                                         running_mean, running_var
  linear  x, w, b, dy                                 -> y, dx, dw, db
  ce      logits, labels; attr smoothing              -> loss, dlogits
  distill logits, labels, teacher; attrs temperature, weight, smoothing
                                                      -> loss, dlogits
  model   x, labels, /model/<state_dict name>; attrs arch, shortcut (A|B),
          classes, stem (cifar|imagenet), training    -> logits, loss, dx,
          dx_f64 (the same model run in float64),
          /grad/<param name>, /after/<buffer name>, tie_margin (the
          smallest |ReLU input| or max-pool top-2 gap: below ~1e-5 the
          comparison is not meaningful in float32)
"""
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)

# Smallest distance of any ReLU input from 0 and smallest gap between the
# two largest values of any max-pooling window: where these fall below
# float rounding, nibble and PyTorch may legitimately take different sides.
MARGIN = [float("inf")]


def relu(x):
    MARGIN[0] = min(MARGIN[0], x.detach().abs().min().item())
    return F.relu(x)


def maxpool(x, k, s, p):
    w = F.pad(x.detach(), (p, p, p, p), value=float("-inf")).unfold(2, k, s).unfold(3, k, s)
    top = w.reshape(*w.shape[:4], -1).topk(2, dim=-1).values
    gap = top[..., 0] - top[..., 1]
    # windows whose maximum is a ReLU's exact 0 send no gradient anywhere
    gap = gap[top[..., 0] > 0]
    if gap.numel():
        MARGIN[0] = min(MARGIN[0], gap.min().item())
    return F.max_pool2d(x, k, s, p)


def t(f, name, grad=False):
    v = torch.from_numpy(np.array(f[name], dtype=np.float32))
    return v.requires_grad_(grad)


class Block(nn.Module):
    def __init__(self, cin, cout, stride, shortcut):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = 0
        self.stride = stride
        if stride != 1 or cin != cout:
            if shortcut == "A":
                self.pad = cout - cin
            else:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

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


ARCHS = {"resnet20": ([3, 3, 3], [16, 32, 64]), "resnet32": ([5, 5, 5], [16, 32, 64]),
         "resnet18": ([2, 2, 2, 2], [64, 128, 256, 512]), "resnet34": ([3, 4, 6, 3], [64, 128, 256, 512])}


class ResNet(nn.Module):
    def __init__(self, arch, shortcut, classes, stem):
        super().__init__()
        blocks, widths = ARCHS[arch]
        imagenet = arch in ("resnet18", "resnet34")
        if imagenet and stem == "imagenet":
            self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
            self.maxpool = True
        else:
            self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
            self.maxpool = None
        self.bn1 = nn.BatchNorm2d(widths[0])
        if imagenet:
            shortcut = "B"
        cin = widths[0]
        for s, (n, w) in enumerate(zip(blocks, widths)):
            layer = []
            for i in range(n):
                layer.append(Block(cin, w, (1 if s == 0 else 2) if i == 0 else 1, shortcut))
                cin = w
            setattr(self, "layer%d" % (s + 1), nn.Sequential(*layer))
        self.nstages = len(blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = maxpool(x, 3, 2, 1)
        for s in range(self.nstages):
            x = getattr(self, "layer%d" % (s + 1))(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def load_model(fin, dtype):
    """The case's ResNet in dtype with its /model/ state, in its train/eval mode."""
    m = ResNet(attr(fin, "arch"), attr(fin, "shortcut"), int(attr(fin, "classes")), attr(fin, "stem")).to(dtype)
    sd = m.state_dict()
    for k in sd:
        sd[k].copy_(torch.from_numpy(np.array(fin["model/" + k])).reshape(sd[k].shape).to(sd[k].dtype))
    m.train(bool(attr(fin, "training")))
    return m


def attr(f, k):
    v = f.attrs[k]
    return v.decode() if isinstance(v, bytes) else v


def main():
    fin, fout = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "w")
    case = attr(fin, "case")
    out = {}
    if case == "conv":
        x, w = t(fin, "x", True), t(fin, "w", True)
        b = t(fin, "b", True) if "b" in fin else None
        y = F.conv2d(x, w, b, int(attr(fin, "stride")), int(attr(fin, "pad")))
        y.backward(t(fin, "dy"))
        out = {"y": y, "dx": x.grad, "dw": w.grad}
        if b is not None:
            out["db"] = b.grad
    elif case == "bn":
        x, g, b = t(fin, "x", True), t(fin, "gamma", True), t(fin, "beta", True)
        rm, rv = t(fin, "running_mean"), t(fin, "running_var")
        y = F.batch_norm(x, rm, rv, g, b, bool(attr(fin, "training")), float(attr(fin, "momentum")),
                         float(attr(fin, "eps")))
        y.backward(t(fin, "dy"))
        out = {"y": y, "dx": x.grad, "dgamma": g.grad, "dbeta": b.grad, "running_mean": rm, "running_var": rv}
    elif case == "linear":
        x, w, b = t(fin, "x", True), t(fin, "w", True), t(fin, "b", True)
        y = F.linear(x, w, b)
        y.backward(t(fin, "dy"))
        out = {"y": y, "dx": x.grad, "dw": w.grad, "db": b.grad}
    elif case == "ce":
        z = t(fin, "logits", True)
        labels = torch.from_numpy(np.array(fin["labels"], dtype=np.int64))
        loss = F.cross_entropy(z, labels, label_smoothing=float(attr(fin, "smoothing")))
        loss.backward()
        out = {"loss": loss.reshape(1), "dlogits": z.grad}
    elif case == "distill":
        z, teacher = t(fin, "logits", True), t(fin, "teacher")
        labels = torch.from_numpy(np.array(fin["labels"], dtype=np.int64))
        T, w = float(attr(fin, "temperature")), float(attr(fin, "weight"))
        ce = F.cross_entropy(z, labels, label_smoothing=float(attr(fin, "smoothing")))
        kl = F.kl_div(F.log_softmax(z / T, 1), F.softmax(teacher / T, 1), reduction="batchmean")
        loss = (1 - w) * ce + w * T * T * kl
        loss.backward()
        out = {"loss": loss.reshape(1), "dlogits": z.grad}
    elif case == "model":
        m = load_model(fin, torch.float32)
        x = t(fin, "x", True)
        labels = torch.from_numpy(np.array(fin["labels"], dtype=np.int64))
        logits = m(x)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        out = {"logits": logits, "loss": loss.reshape(1), "dx": x.grad,
               "tie_margin": torch.tensor([MARGIN[0]])}
        # float64 reference: PyTorch's float32 answer is itself off by up
        # to ~1e-4 at the end of a deep backward (BN over few values)
        x64 = torch.from_numpy(np.array(fin["x"])).double().requires_grad_(True)
        F.cross_entropy(load_model(fin, torch.float64)(x64), labels).backward()
        out["dx_f64"] = x64.grad
        for k, p in m.named_parameters():
            out["grad/" + k] = p.grad
        for k, v in m.named_buffers():
            out["after/" + k] = v.to(torch.float32)
    else:
        sys.exit("unknown case " + case)
    for k, v in out.items():
        fout.create_dataset(k, data=v.detach().numpy().astype(np.float32))
    fout.close()


if __name__ == "__main__":
    main()
