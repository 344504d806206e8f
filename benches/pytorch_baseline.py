#!/usr/bin/env python3
"""PyTorch eager baseline for `vaegpu bench --steps`: the same models, the same step, the same device.

The models are vaegpu's defaults, layer for layer:
  vae       784 -> 400 (ReLU) -> 40 (mu | log sigma^2); 20 -> 400 (ReLU) -> 784 logits
  conv-vae  conv 1->32 k4 s2 p1 ReLU, conv 32->64 k4 s2 p1 ReLU, flatten 3136 -> 40;
            20 -> 3136 ReLU, reshape 64x7x7, deconv 64->32 k4 s2 p1 ReLU, deconv 32->1 k4 s2 p1 logits
One training step: gather a batch of uint8 images from a data set held on the GPU (a random permutation,
as vaegpu's gather does), scale by 1/255, encode, z = mu + sigma * eps, decode, loss = mean over the batch
of (summed Bernoulli BCE with logits + closed-form KL to N(0, I)), backward, Adam (lr 1e-3).

Timing mirrors vaegpu's step sweep: warm-up steps, then at least --min-seconds of steps with the loss read
back (a host wait) every 50 steps as a progress bar does, and torch.cuda.synchronize() inside the timed
region at the end. FP32 throughout: TF32 is off for matmuls and convolutions unless --tf32 (vaegpu's
kernels are plain FP32). Data are random bytes of Fashion-MNIST's shape (nothing is downloaded).

--device cpu runs the same steps on the host's CPU (PyTorch's CPU kernels: its BLAS for the linear layers,
oneDNN for the convolutions) with --threads threads: the side-by-side baseline for vaegpu on lavapipe,
whose device is that same CPU. benches/cpu_baseline.sh runs it so, with the setup its header gives
(Debian 12's python3-torch with OpenBLAS's OpenMP build; Debian's default reference BLAS is slow, and
OpenBLAS's pthread build fights PyTorch's OpenMP threads for the cores).

Prints one JSON object per line: framework, version, device, model, batch, steps, seconds, steps_per_second.
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class MlpVae(nn.Module):
    def __init__(self, d=784, h=400, z=20):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 2 * z))
        self.dec = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, d))

    def forward(self, x):
        return self.enc(x.flatten(1)), lambda z: self.dec(z)


class ConvVae(nn.Module):
    def __init__(self, z=20):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(64 * 7 * 7, 2 * z),
        )
        self.proj = nn.Linear(z, 64 * 7 * 7)
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1),
        )

    def forward(self, x):
        return self.enc(x), lambda z: self.dec(F.relu(self.proj(z)).view(-1, 64, 7, 7)).flatten(1)


def step(model, opt, data, idx):
    x = data[idx].float().div_(255.0)
    h, decode = model(x)
    mu, logvar = h.chunk(2, dim=1)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    logits = decode(z)
    rec = F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu * mu - logvar.exp())
    loss = (rec + kl) / x.shape[0]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def device_name(dev):
    if dev.type == "cuda":
        return torch.cuda.get_device_name(0)
    model = "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def bench(name, batch, min_seconds, dev, log_every=50):
    torch.manual_seed(0)
    model = (MlpVae() if name == "vae" else ConvVae()).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = batch * 64
    data = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, device=dev)
    perm = torch.randperm(n, device=dev)
    batches = [perm[i * batch:(i + 1) * batch] for i in range(n // batch)]
    for i in range(20):
        step(model, opt, data, batches[i % len(batches)])
    sync(dev)
    # Estimate, then time at least min_seconds.
    t = time.perf_counter()
    for i in range(20):
        step(model, opt, data, batches[i % len(batches)])
    sync(dev)
    est = (time.perf_counter() - t) / 20
    steps = max(int(min_seconds / est) + 1, 50)
    t = time.perf_counter()
    for i in range(steps):
        loss = step(model, opt, data, batches[i % len(batches)])
        if (i + 1) % log_every == 0:
            loss.item()
    sync(dev)
    secs = time.perf_counter() - t
    final = loss.item()
    assert final == final and abs(final) != float("inf"), "non-finite loss"
    return steps, secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="vae,conv-vae")
    ap.add_argument("--batches", default="128")
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    for m in a.models.split(","):
        for b in (int(v) for v in a.batches.split(",")):
            steps, secs = bench(m, b, a.min_seconds, dev)
            print(json.dumps({
                "framework": "pytorch-eager", "version": torch.__version__,
                "device": device_name(dev), "tf32": a.tf32, "model": m, "batch": b,
                "steps": steps, "seconds": secs, "steps_per_second": steps / secs,
                "images_per_second": steps * b / secs,
            }), flush=True)


if __name__ == "__main__":
    main()
