"""MLI speed: (member, alpha) evaluations per second, packed forward against one point at a time.

Members are synthetic (seeded init plus a seeded step) and so are the uint8 images: the speed of
a forward pass does not depend on the values. On CPU it compares, with one thread per process:
one point at a time, packed forwards of k points (zoo.train.evaluate.evaluate_flat), and one point at
a time in `--workers` processes (the stage's CPU path, spawn start-up included). On CUDA, when
there is one: one point at a time against packed forwards of several (points, batch) shapes, in
fp32 (TF32 off, the stage's default) and bf16 autocast. Each line ends with the projected time
of the paper's setting, 300 members x 25 alphas of one family on the 50,000 training images.

    python benchmarks/mli_speed.py [--family standard] [--images 200] [--gpu-images 10000]
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

import zoo
from pipelines import mli
from pipelines.hardware import describe as hardware

PAPER_POINTS = 300 * 25  # members x alphas per family
PAPER_IMAGES = 50_000  # CIFAR-10 training images


def members(family: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, P] initial and 'trained' vectors, seeded."""
    net = zoo.build(family)
    theta0 = torch.stack([zoo.flatten(zoo.init_weights(net, s)) for s in range(n)])
    step = torch.randn(theta0.shape, generator=torch.Generator().manual_seed(1))
    return theta0.numpy(), (theta0 + 0.05 * step).numpy()


def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def task(family: str, theta0: np.ndarray, theta_t: np.ndarray, first: int = 0) -> mli.Task:
    n = len(theta0)
    rows = pd.DataFrame({"member_id": [f"m{first + i}" for i in range(n)], "family": family, "index": range(first, first + n),
                         "status": "ok", "train_loss_recorded": 0.0, "label_smoothing": 0.1})
    return mli.Task(family, 0, rows, theta0, theta_t)


def timed(tasks: list[mli.Task], x, y, cfg: mli.MliConfig) -> float:
    """(member, alpha) points per second over `tasks` (after one warm-up point in this process)."""
    if cfg.n_workers() == 1:
        t = tasks[0]
        mli.Evaluator(x[:8], y[:8], replace(cfg, alphas=3))(task(t.family, t.theta0[:1], t.theta_t[:1]))
    sync(cfg.device)
    start = time.perf_counter()
    n = sum(len(losses) * losses.shape[1] for _, losses in mli.evaluate_curves(tasks, x, y, cfg))
    sync(cfg.device)
    return n / (time.perf_counter() - start)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def line(label: str, rate: float, base: float, n_images: int) -> str:
    img_rate = rate * n_images
    hours = PAPER_POINTS * PAPER_IMAGES / img_rate / 3600
    return (f"  {label:<44} {rate:10.2f} pts/s  {img_rate:12,.0f} img/s  x{rate / base:6.2f}  "
            f"paper setting: {hours:8.2f} h per family")


def cpu_rows(family: str, n_images: int, workers: int) -> list[str]:
    torch.set_num_threads(1)
    x, y = images(n_images)
    theta0, theta_t = members(family, 2 * workers)
    cfg = mli.MliConfig(zoo="-", alphas=25, device="cpu", workers=1, batch=n_images)
    one_task = [task(family, theta0[:1], theta_t[:1])]
    base = timed(one_task, x, y, cfg)
    out = [line("one point at a time, 1 process", base, base, n_images)]
    for k in (5, 25):
        out.append(line(f"packed {k} points per forward, 1 process", timed(one_task, x, y, replace(cfg, points=k)), base, n_images))
    tasks = [task(family, theta0[i : i + 1], theta_t[i : i + 1], i) for i in range(len(theta0))]
    rate = timed(tasks, x, y, replace(cfg, workers=workers))
    out.append(line(f"one point at a time, {workers} processes (stage)", rate, base, n_images))
    return out


def gpu_rows(family: str, n_images: int) -> list[str]:
    x, y = images(n_images)
    theta0, theta_t = members(family, 16)
    cfg = mli.MliConfig(zoo="-", alphas=25, device="cuda", batch=5000, points=1)
    base = timed([task(family, theta0[:2], theta_t[:2])], x, y, cfg)
    out = [line("one point at a time, fp32, batch 5000", base, base, n_images)]
    for autocast in (False, True):
        for points, batch in ((16, 2000), (64, 500), (64, 1000), (200, 250), (400, 125)):
            c = replace(cfg, points=points, batch=batch, autocast=autocast)
            rate = timed([task(family, theta0, theta_t)], x, y, c)
            out.append(line(f"packed {points} points, batch {batch}, {'bf16' if autocast else 'fp32'}", rate, base, n_images))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="standard", choices=list(zoo.FAMILIES))
    p.add_argument("--images", type=int, default=200, help="images per point on CPU")
    p.add_argument("--gpu-images", type=int, default=10_000, help="images per point on CUDA")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes of the CPU stage path")
    args = p.parse_args()
    print(hardware())
    print(f"family {args.family}; pts = (member, alpha) evaluations; x = ratio to one point at a time")
    print(f"CPU, {args.images} images per point, one thread per process:")
    print("\n".join(cpu_rows(args.family, args.images, args.workers)))
    if torch.cuda.is_available():
        print(f"CUDA, {args.gpu_images} images per point:")
        print("\n".join(gpu_rows(args.family, args.gpu_images)))
    else:
        print("CUDA: not available on this machine; nothing measured")


if __name__ == "__main__":
    main()
