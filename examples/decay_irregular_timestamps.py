"""A decay-attention layer on irregularly spaced events (``MultiScaleDecayAttention`` with ``times``).

Events arrive at random times (exponential gaps, so bursts and long silences). The quantity to
predict at each event is a *time*-weighted average of the values seen so far,
``y_i = Σ_j exp(-(t_i - t_j)/τ) x_j / Σ_j exp(-(t_i - t_j)/τ)``: what matters is how long ago an
event happened, not how many events came in between.

``MultiScaleDecayAttention`` scores key ``j`` for query ``i`` with ``q·k/sqrt(D) + log Σ_s α_s γ_s^Δ``.
Given ``times``, ``Δ = t_i - t_j`` in the unit of ``times``; without, ``Δ = i - j`` counts events.
The same small model is trained both ways; the time-aware one fits the target far better, and
its learned decay rates can be read back with ``decay_stats()``.

Run: ``python examples/decay_irregular_timestamps.py`` (about ten seconds on a CPU).
"""
import math

import torch
from torch import nn

from tempattn import nn as tnn

TAU = 3.0          # the target's time constant, in the unit of `times` (hours, say)
B, T, E, H = 32, 24, 16, 2


def make_batch(generator: torch.Generator):
    """Values x (B, T, 1), irregular times (B, T) float64, padding (B, T), targets y (B, T)."""
    gaps = torch.empty(B, T, dtype=torch.float64).exponential_(1.0, generator=generator)  # mean gap 1 unit
    times = torch.cumsum(gaps, dim=1) + 1.7e9 / 3600   # epoch hours: large offsets are fine in float64
    x = torch.randn(B, T, 1, generator=generator)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=generator)
    padding = torch.arange(T)[None, :] >= lengths[:, None]           # True = padding, at the end
    times = torch.where(padding, times.gather(1, (lengths - 1)[:, None]).expand(B, T), times)  # non-decreasing
    dt = (times[:, :, None] - times[:, None, :]).clamp(min=0)        # (B, Tq, Tk)
    w = torch.exp(-dt / TAU) * torch.ones(T, T).tril() * (~padding)[:, None, :]
    y = (w.float() @ x).squeeze(-1) / w.sum(-1).float()
    return x, times, padding, y


class Model(nn.Module):
    def __init__(self, use_times: bool):
        super().__init__()
        self.use_times = use_times
        self.inp = nn.Linear(1, E)
        self.attn = tnn.MultiScaleDecayAttention(E, H)                # default decay ranges per scale
        self.out = nn.Linear(E, 1)

    def forward(self, x, times, padding):
        h = self.inp(x)
        h = self.attn(h, key_padding_mask=padding, times=times if self.use_times else None)
        return self.out(h).squeeze(-1)


def train(use_times: bool, steps: int = 100) -> Model:
    torch.manual_seed(0)
    model = Model(use_times)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, times, padding, y = make_batch(generator)
        loss = ((model(x, times, padding) - y) ** 2)[~padding].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@torch.no_grad()
def evaluate(model: Model) -> float:
    x, times, padding, y = make_batch(torch.Generator().manual_seed(123))
    return float(((model(x, times, padding) - y) ** 2)[~padding].mean())


def main():
    by_time, by_count = train(use_times=True), train(use_times=False)
    mse_time, mse_count = evaluate(by_time), evaluate(by_count)
    print(f"test MSE  decay over elapsed time: {mse_time:.4f}   decay over event count: {mse_count:.4f}")
    assert mse_time < mse_count, "elapsed-time decay should fit a time-decayed target better"

    stats = by_time.attn.decay_stats()                                 # gamma, alpha: (H, S), detached
    print(f"target decay per time unit exp(-1/τ) = {math.exp(-1 / TAU):.3f}")
    for h in range(H):
        rates = ", ".join(f"γ={g:.3f} (α={a:.2f})" for g, a in zip(stats.gamma[h].tolist(), stats.alpha[h].tolist()))
        print(f"head {h}: {rates}")

    # Padding never leaks: changing padded values or their (repeated) timestamps changes nothing.
    x, times, padding, _ = make_batch(torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = by_time(x, times, padding)
        after = by_time(x.masked_fill(padding[..., None], 1e3), times, padding)
    torch.testing.assert_close(before[~padding], after[~padding])
    print("ok")


if __name__ == "__main__":
    main()
