"""Convolutional recurrent unit shared by RecurrentVarNet and RIM.

A stack of ``num_layers`` (convolution -> recurrent cell) layers followed by an output convolution::

    layer 0:      ReplicationPad(2), Conv 5x5,                 ReLU, cell_0
    layer 1:      ReplicationPad(2), Conv 3x3 (dilation 2),    ReLU, cell_1
    layer i >= 2: ReplicationPad(1), Conv 3x3,                 ReLU, cell_i
    output:       ReplicationPad(1), Conv 3x3 -> out_channels   (no activation)

The output of each cell is its new hidden state; ReLU of it feeds the next layer.
The hidden state of the whole unit is one tensor ``(N, hidden, H, W, num_layers)``.

Cells (``x``: conv features, ``h``: previous state of that layer, ``[.,.]``: channel concat,
``W_*``: 1x1 convolutions):

* ``"gru"``::

      z = sigmoid(W_z [x, h]),   r = sigmoid(W_r [x, h])
      h' = (1 - z) h + z tanh(W_o [x, r h])

* ``"indrnn"`` (Li et al. 2018, used in the efficient RIM)::

      h' = ReLU(W_x x + u * h + b)      with u a learned per-channel recurrent weight
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CELL_TYPES = ("gru", "indrnn")


def padded_conv(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> nn.Sequential:
    """Replication padding then an unpadded convolution: output keeps the spatial size."""
    pad = dilation * (kernel_size - 1) // 2
    return nn.Sequential(nn.ReplicationPad2d(pad),
                         nn.Conv2d(in_channels, out_channels, kernel_size, dilation=dilation))


class ConvGRUCell(nn.Module):
    """Gated recurrent cell with 1x1 convolution gates over ``[x, h]`` (see module docstring)."""

    def __init__(self, channels: int):
        super().__init__()
        self.reset_gate = nn.Conv2d(2 * channels, channels, 1)
        self.update_gate = nn.Conv2d(2 * channels, channels, 1)
        self.out_gate = nn.Conv2d(2 * channels, channels, 1)
        for gate in (self.reset_gate, self.update_gate, self.out_gate):
            nn.init.orthogonal_(gate.weight)
            nn.init.zeros_(gate.bias)
        # start with mostly-closed reset gates: the candidate relies on the input at first
        nn.init.constant_(self.reset_gate.bias, -1.0)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        xh = torch.cat((x, h), dim=1)
        update = torch.sigmoid(self.update_gate(xh))
        reset = torch.sigmoid(self.reset_gate(xh))
        candidate = torch.tanh(self.out_gate(torch.cat((x, reset * h), dim=1)))
        return h + update * (candidate - h)


class IndRNNCell(nn.Module):
    """Independently recurrent cell: ``h' = ReLU(W_x x + u * h + b)`` with per-channel ``u``."""

    def __init__(self, channels: int):
        super().__init__()
        self.input_conv = nn.Conv2d(channels, channels, 1)
        nn.init.orthogonal_(self.input_conv.weight)
        nn.init.zeros_(self.input_conv.bias)
        self.recurrent_weight = nn.Parameter(torch.empty(1, channels, 1, 1).uniform_(0.0, 1.0))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return F.relu(self.input_conv(x) + self.recurrent_weight * h)


def make_cell(cell: str, channels: int) -> nn.Module:
    """A recurrent cell by name (``"gru"`` or ``"indrnn"``)."""
    if cell == "gru":
        return ConvGRUCell(channels)
    if cell == "indrnn":
        return IndRNNCell(channels)
    raise ValueError(f"cell must be one of {CELL_TYPES}, got {cell!r}")


class ConvRecurrentUnit(nn.Module):
    """Multi-layer convolutional recurrent unit (ConvGRU by default); see the module docstring."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int = 2, num_layers: int = 4,
                 cell: str = "gru"):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if hidden_channels < 1:
            raise ValueError(f"hidden_channels must be >= 1, got {hidden_channels}")
        self.hidden_channels = hidden_channels
        self.num_layers = num_layers
        self.cell_type = cell
        convs = []
        for idx in range(num_layers):
            if idx == 0:
                convs.append(padded_conv(in_channels, hidden_channels, 5))
            else:
                convs.append(padded_conv(hidden_channels, hidden_channels, 3, dilation=2 if idx == 1 else 1))
        self.convs = nn.ModuleList(convs)
        self.cells = nn.ModuleList(make_cell(cell, hidden_channels) for _ in range(num_layers))
        self.out_conv = padded_conv(hidden_channels, out_channels, 3)

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        """Zero hidden state ``(N, hidden, H, W, num_layers)`` for an input ``x`` of shape (N, C, H, W)."""
        return x.new_zeros((x.shape[0], self.hidden_channels, x.shape[2], x.shape[3], self.num_layers))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One recurrence: ``x`` (N, in, H, W), ``state`` (N, hidden, H, W, L) or None (zeros).

        Returns the output (N, out, H, W) and the new state (N, hidden, H, W, L).
        """
        if state is None:
            state = self.initial_state(x)
        new_states = []
        for idx in range(self.num_layers):
            x = F.relu(self.convs[idx](x))
            h = self.cells[idx](x, state[..., idx])
            new_states.append(h)
            x = F.relu(h)
        return self.out_conv(x), torch.stack(new_states, dim=-1)
