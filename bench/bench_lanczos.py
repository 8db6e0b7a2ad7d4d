"""Benchmark: the Lanczos step's own work (reorthogonalisation) without products.

The SLQ of the default analysis advances 3 probes for 60 steps; each step reorthogonalises
the new vectors against the basis twice (``lanczos.Lanczos._orthogonalise``), which reads the
whole basis (3 x steps x P floats) four times: on the CIFAR ResNet-18 (P = 11.2M) about 16 GB
per step at its midpoint. Timed here on synthetic vectors (``--params`` of them, ``--columns``
probes, ``--steps`` basis vectors), each way of computing the same projections, with TF32
allowed (as inside the analysis) and without; then whole ``Lanczos.step`` calls with a free
operator (a diagonal) for ``--lanczos-steps`` steps. Milliseconds are CUDA-event times of the
fastest of ``--repeats`` calls; the errors are against float64 projections.

    python bench/bench_lanczos.py [--params 11173962] [--columns 3] [--steps 31]
"""
from __future__ import annotations

import argparse

import torch

from landscape_lib.analyses.hessian.lanczos import Lanczos


def bmm_pass(Q, w):
    """The step's projection before (one pass): two batched matrix products."""
    return w - torch.bmm(torch.bmm(Q, w[:, :, None]).transpose(1, 2), Q)[:, 0]


def coefficients_bmm(Q, w):
    return torch.bmm(Q, w[:, :, None])[..., 0]


def coefficients_mv(Q, w):
    return torch.stack([torch.mv(Q[c], w[c]) for c in range(Q.shape[0])])


def coefficients_mul_sum(Q, w):
    return (Q * w[:, None, :]).sum(-1)


def coefficients_split(Q, w, chunk=1 << 16):
    """Split-K by hand: the P axis in chunks, a batched product per chunk, summed."""
    m, k, n = Q.shape
    full = n // chunk * chunk
    out = []
    for c in range(m):
        head = Q[c, :, :full].unflatten(1, (-1, chunk)).transpose(0, 1)  # (S, k, chunk)
        part = torch.bmm(head, w[c, :full].view(-1, chunk, 1)).sum(0)[:, 0]
        if full < n:
            part = part + Q[c, :, full:] @ w[c, full:]
        out.append(part)
    return torch.stack(out)


def update_bmm(Q, c):
    return torch.bmm(c[:, None, :], Q)[:, 0]


def update_mv(Q, c):
    return torch.stack([torch.mv(Q[i].T, c[i]) for i in range(Q.shape[0])])


def timed(fn, repeats):
    best = float("inf")
    for _ in range(repeats + 1):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end))
    return best, out


class Free:
    def __init__(self, n, device):
        self.shape, self.device, self.dtype = (n, n), device, torch.float32
        self.d = torch.linspace(-1, 1, n, device=device)

    def __matmul__(self, V):
        return self.d[:, None] * V


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--params", type=int, default=11_173_962)
    p.add_argument("--columns", type=int, default=3)
    p.add_argument("--steps", type=int, nargs="*", default=[31, 61])
    p.add_argument("--lanczos-steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    device = torch.device("cuda")
    g = torch.Generator(device=device).manual_seed(0)
    m, n = args.columns, args.params
    for k in args.steps:
        Q = torch.linalg.qr(torch.randn(m, n, k, generator=g, device=device))[0].transpose(1, 2)
        Q = Q.contiguous()                                      # (m, k, n) orthonormal rows
        w = torch.randn(m, n, generator=g, device=device)
        ref = (Q.double() @ w.double()[:, :, None])[..., 0]
        gb = Q.numel() * 4 / 1e9
        print(f"P = {n:,}, {m} columns, {k} basis vectors: the basis is {gb:.2f} GB")
        for tf32 in (True, False):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            for name, fn in (("coefficients bmm", coefficients_bmm),
                             ("coefficients mv", coefficients_mv),
                             ("coefficients mul+sum", coefficients_mul_sum),
                             ("coefficients split-K", coefficients_split)):
                ms, c = timed(lambda: fn(Q, w), args.repeats)
                err = float(((c.double() - ref).norm() / ref.norm()))
                print(f"  TF32 {'on ' if tf32 else 'off'} {name:>22}: {ms:7.2f} ms "
                      f"({gb / ms:5.2f} TB/s), error {err:.1e}")
            c = ref.float()
            ref_u = (c.double()[:, None, :] @ Q.double())[:, 0]
            for name, fn in (("update bmm", update_bmm), ("update mv", update_mv)):
                ms, u = timed(lambda: fn(Q, c), args.repeats)
                err = float(((u.double() - ref_u).norm() / ref_u.norm()))
                print(f"  TF32 {'on ' if tf32 else 'off'} {name:>22}: {ms:7.2f} ms "
                      f"({gb / ms:5.2f} TB/s), error {err:.1e}")
            ms, _ = timed(lambda: bmm_pass(Q, w), args.repeats)
            print(f"  TF32 {'on ' if tf32 else 'off'} {'a whole pass (bmm)':>22}: {ms:7.2f} ms")
        del Q, w
        torch.cuda.empty_cache()
    for tf32 in (True, False):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        op = Free(n, device)
        lz = Lanczos(op, torch.randn(n, m, generator=g, device=device), g,
                     capacity=args.lanczos_steps + 1)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(args.lanczos_steps):
            lz.step()
        end.record()
        end.synchronize()
        ms = start.elapsed_time(end)
        Qb = lz.basis[:, :lz.steps + 1].double()
        gram = Qb @ Qb.transpose(1, 2)
        loss = float((gram - torch.eye(gram.shape[1], device=device, dtype=gram.dtype)
                      ).abs().max())
        del Qb, gram
        print(f"Lanczos.step x {args.lanczos_steps} (free operator, TF32 "
              f"{'on' if tf32 else 'off'}): {ms / args.lanczos_steps:.2f} ms per step; "
              f"max |Q Q^T - I| {loss:.1e}")
        del lz
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
