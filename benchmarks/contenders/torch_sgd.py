"""PyTorch on CPU: ``nn.Sequential`` + ``torch.optim.SGD``, the usual loop.

Per epoch ``torch.randperm(n, generator=g)``; per step index the batch out of
the tensors, ``zero_grad``, forward, loss, ``backward``, ``step``. Weights are
copied from the shared initial parameters; losses are ``0.5 * mse_loss``,
``cross_entropy`` and ``binary_cross_entropy_with_logits`` (means, as
everywhere). ``torch.set_num_threads`` is left at its default (the number of
cores, which is also what XLA's CPU client uses) and reported; the runner adds
a ``torch[threads=1]`` diagnostic, because on a loaded 2-core machine torch's
spinning OpenMP threads can slow it down many times over. Indexing tensors
directly is faster than a ``DataLoader`` (which collates per batch), so this is
the fast idiom; ``torch.compile`` is not used (it needs a C++ toolchain and
gains little on steps this small).
"""

from __future__ import annotations

import numpy as np

from benchmarks.contenders import Prepared
from benchmarks.workloads import Workload, reference_orders

NAME = "torch"
LABEL = "PyTorch torch.optim.SGD (CPU)"
REQUIRES = ("torch",)


def supports(w: Workload) -> bool:
    return not w.is_sweep


def prepare(w: Workload, *, threads: int | None = None) -> Prepared:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.array(w.x, np.float32))
    label_dtype = np.int64 if w.task == "multiclass" else np.float32
    y = torch.from_numpy(np.array(w.y, label_dtype))
    shared = reference_orders(w) if w.shared_order else None

    def model():
        layers = []
        for i, layer in enumerate(w.params):
            d_in, d_out = layer["w"].shape
            lin = torch.nn.Linear(d_in, d_out)
            with torch.no_grad():
                lin.weight.copy_(torch.tensor(np.asarray(layer["w"]).T))
                lin.bias.copy_(torch.tensor(np.asarray(layer["b"])))
            layers.append(lin)
            if i < len(w.params) - 1:
                layers.append(torch.nn.ReLU())
        return torch.nn.Sequential(*layers)

    if w.task == "regression":

        def loss_fn(z, t):
            return 0.5 * F.mse_loss(z[:, 0], t)
    elif w.task == "binary":

        def loss_fn(z, t):
            return F.binary_cross_entropy_with_logits(z[:, 0], t)
    else:
        loss_fn = F.cross_entropy

    b, steps = w.batch, w.steps_per_epoch

    def run():
        if threads is None:
            return train()
        default = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return train()
        finally:
            torch.set_num_threads(default)

    def train():
        net = model()
        opt = torch.optim.SGD(net.parameters(), lr=w.learning_rate, momentum=w.momentum)
        g = torch.Generator().manual_seed(w.seed)
        for epoch in range(w.epochs):
            if w.batch_size is None:
                batches = [(x, y)]
            else:
                if shared is not None:
                    perm = torch.from_numpy(shared[epoch].reshape(-1).astype(np.int64))
                else:
                    perm = torch.randperm(w.n, generator=g)
                batches = (
                    (x[idx], y[idx])
                    for idx in (perm[i * b : (i + 1) * b] for i in range(steps))
                )
            for xb, yb in batches:
                opt.zero_grad()
                loss = loss_fn(net(xb), yb)
                loss.backward()
                opt.step()
        return net

    def to_params(net):
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        return [
            {
                "w": m.weight.detach().numpy().T.astype(np.float32),
                "b": m.bias.detach().numpy().astype(np.float32),
            }
            for m in linears
        ]

    used = threads or torch.get_num_threads()
    return Prepared(
        run=run,
        to_params=to_params,
        threads=used,
        notes=f"torch {torch.__version__}, {used} thread(s)"
        + ("" if threads else " (default)"),
    )
