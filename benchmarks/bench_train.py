"""`deepscope.train.fit` against the raw work: the same epoch written as a bare training loop."""

from __future__ import annotations

import torch

from . import Benchmark


def benchmarks() -> list[Benchmark]:
    from deepscope import data, models, train

    x, y = data.digits("train")
    model = models.mlp(64, (256, 256), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def ours():
        train.fit(model, (x, y), epochs=1, optimizer=optimizer, batch_size=128, progress=False)

    def raw():
        generator = torch.Generator().manual_seed(0)
        order = torch.randperm(len(x), generator=generator)
        model.train()
        for start in range(0, len(x), 128):
            idx = order[start : start + 128]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return [Benchmark("fit: 1 epoch, digits MLP 64-256-256-10", ours, raw,
                      reference_name="bare training loop", target=1.3, repeats=9)]
