"""Projection heads for DINO/EsViT.

:class:`DINOHead` maps features (..., in_dim) to K = out_dim logits: the view head on pooled features
(B, D) and, as a second instance, the EsViT dense head on every token (B, L, Dt). The teacher's heads are
copies of the student's (``copy.deepcopy``), updated by EMA (:func:`wearspec.training.schedules.ema_update`).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from wearspec.errors import WearspecError


class DINOHead(nn.Module):
    """MLP → bottleneck → L2-normalise → weight-normalised linear layer. Input (..., in_dim); output
    (..., out_dim) logits (any leading dims: (B, D) pooled or (B, L, Dt) tokens).

    mlp: ``nlayers`` Linear layers in → hidden → … → bottleneck with GELU between them, no BatchNorm
        (``nlayers=1``: one Linear(in_dim, bottleneck_dim)). trunc-normal(0.02) weights, zero biases.
    last_layer: Linear(bottleneck_dim, out_dim, bias=False) with weight = g · v / ‖v‖ per output row,
        through ``torch.nn.utils.parametrizations.weight_norm``: parameters
        ``last_layer.parametrizations.weight.original0`` (g, (out_dim, 1)) and ``...original1``
        (v, (out_dim, bottleneck_dim)). ``norm_last_layer=True`` (DINO's default, more stable) fixes g to 1
        and freezes it (``requires_grad=False``), so every logit is a cosine similarity in [−1, 1].

    State dicts, ``copy.deepcopy`` and parameter order are the same for every instance of one
    configuration, so a teacher copied from the student loads the student's weights and EMA pairs
    parameters by name.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 nlayers: int = 3, norm_last_layer: bool = True):
        super().__init__()
        if min(in_dim, out_dim, hidden_dim, bottleneck_dim, nlayers) < 1:
            raise WearspecError(f"DINOHead: dimensions and nlayers must be ≥ 1, got in_dim={in_dim}, "
                                f"out_dim={out_dim}, hidden_dim={hidden_dim}, bottleneck_dim={bottleneck_dim}, "
                                f"nlayers={nlayers}")
        self.in_dim, self.out_dim, self.norm_last_layer = int(in_dim), int(out_dim), bool(norm_last_layer)
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers += [nn.Linear(a, b)] + ([nn.GELU()] if i < nlayers - 1 else [])
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        last = nn.Linear(bottleneck_dim, out_dim, bias=False)
        nn.init.trunc_normal_(last.weight, std=0.02)
        self.last_layer = weight_norm(last, name="weight", dim=0)
        gain = self.last_layer.parametrizations.weight.original0
        gain.data.fill_(1.0)  # unit-norm rows at the start either way (weight_norm would start at the rows' norms)
        if self.norm_last_layer:
            gain.requires_grad_(False)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """[g, v] of the weight-normalised last layer (the ones to freeze during the first epoch)."""
        return list(self.last_layer.parameters())

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_dim) → (..., out_dim)."""
        z = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(z)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, norm_last_layer={self.norm_last_layer}"


def last_layer_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The last-layer parameters of every :class:`DINOHead` inside ``module`` (the head itself, a model
    holding a view head and a dense head, or a DDP wrapper), in module order."""
    return [p for m in module.modules() if isinstance(m, DINOHead) for p in m.last_layer_parameters()]


def cancel_last_layer_gradients(module: nn.Module, epoch: int, freeze_epochs: int = 1) -> bool:
    """Drop the gradients of every DINO head's last layer while ``epoch < freeze_epochs`` (DINO: the first
    epoch), after ``backward()`` and before ``optimizer.step()``. Grads are set to None, so AdamW skips those
    parameters entirely (no update, no weight decay). Returns True when it cancelled."""
    if epoch >= freeze_epochs:
        return False
    for p in last_layer_parameters(module):
        p.grad = None
    return True
