"""HiT, the Hindered Transformer (thesis ch. 6): a ViT whose logits are an exact sum of
per-layer, per-patch contributions.

Block (eq. 6.7): the CLS token is updated only by multi-head attention with the CLS as the
single query and the patch tokens as keys and values; the patch tokens are updated only by
their own MLP, so every patch token holds information of its own patch (and position) alone.
The MLP of the last block is never used by the CLS and is left out (thesis, footnote 3).

LayerNorms sit as in a pre-norm ViT: ``norm1`` on every token before attention, ``norm2`` on
the patch tokens before their MLP, ``norm`` on the final CLS before the linear head. The
decomposition stays exact:

* ``norm1``/``norm2`` act on one token at a time, so patch tokens stay local; the query's norm
  only changes the attention weights a(v), which are scalars on each patch's value (eq. 6.4).
* the final ``norm`` is LN(x) = γ ⊙ (x − mean x) / σ(x) + β. Centring is linear; σ(x) is one
  number per image, taken from the complete CLS and divided into every term. So for terms
  t_lp with Σ t_lp = x, LN(x) = Σ γ ⊙ (t_lp − mean t_lp) / σ(x) + β exactly.

Contributions (eq. 6.8): t_lp = v'_l(p) + b_o^l / P + x_0[0] / (L·P), where v'_l(p) is patch
p's share of layer l's attention output (eq. 6.5); the head's bias and W·β are spread evenly
too. ``contributions`` returns them as (N, L, P, K) summing to the logits (N, K).
``layer_terms`` keeps apart what belongs to a layer, v'_l(p) + b_o^l / P, and what to none (the
initial CLS token and the head's constants), for layer saliency and removal.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from timm.layers import Mlp, PatchEmbed, trunc_normal_
from torch import Tensor, nn


class CLSAttention(nn.Module):
    """Multi-head attention of one query token (the CLS) over P key/value tokens (eqs. 6.1–6.5)."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)

    def weighted_values(self, query: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Per-token attention-weighted values (N, P, D), heads concatenated, before ``proj``,
        and the attention weights (N, heads, P) of query (N, D) over tokens (N, P, D)."""
        count, patches, dim = tokens.shape
        q = self.q(query).view(count, self.num_heads, 1, self.head_dim)
        k, v = self.kv(tokens).view(count, patches, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attention = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).squeeze(2).softmax(dim=-1)
        weighted = self.attn_drop(attention).unsqueeze(-1) * v  # (N, heads, P, head_dim)
        return weighted.permute(0, 2, 1, 3).reshape(count, patches, dim), attention

    def forward(self, query: Tensor, tokens: Tensor) -> Tensor:
        """MHA output (N, D) = b_o + Σ_p W_o · (weighted value of p)."""
        weighted, _ = self.weighted_values(query, tokens)
        return self.proj(weighted.sum(dim=1))


class HiTBlock(nn.Module):
    """x[0] += MHA(x[0], x[1:]); x[1:] += MLP(x[1:]) (eq. 6.7), pre-norm; ``mlp`` None in the last block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, attn_drop: float, with_mlp: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CLSAttention(dim, num_heads, attn_drop)
        self.norm2 = nn.LayerNorm(dim) if with_mlp else None
        self.mlp = Mlp(dim, int(dim * mlp_ratio)) if with_mlp else None

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """tokens (N, 1 + P, D) → weighted values (N, P, D), attention (N, heads, P), patches (N, P, D)."""
        normed = self.norm1(tokens)
        weighted, attention = self.attn.weighted_values(normed[:, 0], normed[:, 1:])
        patches = tokens[:, 1:]
        if self.mlp is not None:
            patches = patches + self.mlp(self.norm2(patches))
        return weighted, attention, patches


@dataclass
class HiTTrace:
    """What one forward pass leaves for the decomposition.

    ``updates``: per-patch CLS updates v'_l(p) (N, L, P, D) without the projection bias;
    ``attention``: CLS→patch attention (N, L, heads, P); ``cls``: the final CLS before ``norm`` (N, D);
    ``logits``: (N, K).
    """

    updates: Tensor
    attention: Tensor
    cls: Tensor
    logits: Tensor


@dataclass
class HiTTerms:
    """The logits as layer terms and a constant: ``terms`` (N, L, P, K), each layer's own
    per-patch contributions; ``constant`` (N, K), what no layer adds; ``logits`` (N, K) their sum."""

    terms: Tensor
    constant: Tensor
    logits: Tensor


class HiT(nn.Module):
    """Hindered Transformer classifier of (N, C, S, S) images in [-1, 1] → logits (N, K)."""

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        img_size: int,
        patch_size: int = 4,
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        attn_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(img_size, patch_size, in_channels, embed_dim)
        self.grid_size = self.patch_embed.grid_size
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim))
        self.blocks = nn.ModuleList(
            HiTBlock(embed_dim, num_heads, mlp_ratio, attn_drop, with_mlp=index < depth - 1)
            for index in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_outputs)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def trace(self, images: Tensor, skip_layers: Collection[int] = ()) -> HiTTrace:
        """Forward pass keeping per-patch updates; layers in ``skip_layers`` do not update the CLS
        (their patch MLPs still run), which is how a layer is removed (Fig. 6.5b)."""
        patches = self.patch_embed(images) + self.pos_embed
        cls = self.cls_token.expand(len(images), -1, -1)
        updates, attentions = [], []
        for index, block in enumerate(self.blocks):
            weighted, attention, next_patches = block(torch.cat([cls, patches], dim=1))
            update = weighted @ block.attn.proj.weight.T  # (N, P, D): v'_l(p)
            if index not in skip_layers:
                cls = cls + (update.sum(dim=1) + block.attn.proj.bias).unsqueeze(1)
            else:
                update = torch.zeros_like(update)
            updates.append(update)
            attentions.append(attention)
            patches = next_patches
        cls = cls[:, 0]
        return HiTTrace(torch.stack(updates, 1), torch.stack(attentions, 1), cls, self.head(self.norm(cls)))

    def forward(self, images: Tensor) -> Tensor:
        patches = self.patch_embed(images) + self.pos_embed
        cls = self.cls_token[:, 0].expand(len(images), -1)
        for block in self.blocks:
            weighted, _, patches_next = block(torch.cat([cls.unsqueeze(1), patches], dim=1))
            cls = cls + block.attn.proj(weighted.sum(dim=1))
            patches = patches_next
        return self.head(self.norm(cls))

    def layer_terms(self, images: Tensor, skip_layers: Collection[int] = ()) -> HiTTerms:
        """The logits (N, K) split into each layer's own per-patch terms (N, L, P, K), v'_l(p) +
        b_o^l / P through the final LayerNorm and head, and the part no layer adds (N, K): the
        initial CLS token through them, plus W·β + b_head. Terms and constant sum to the logits."""
        trace = self.trace(images, skip_layers)
        layers, patches = self.depth, self.num_patches
        kept = [index not in skip_layers for index in range(layers)]
        biases = torch.stack(
            [block.attn.proj.bias * float(keep) for block, keep in zip(self.blocks, kept, strict=True)]
        )
        norm = self.norm
        sigma = torch.sqrt(trace.cls.var(dim=-1, unbiased=False) + norm.eps)  # (N,): one per image
        through_norm = lambda x: (x - x.mean(dim=-1, keepdim=True)) * norm.weight  # noqa: E731  (before / σ)
        updates = trace.updates + (biases / patches).view(1, layers, 1, -1)
        terms = through_norm(updates) / sigma.view(-1, 1, 1, 1) @ self.head.weight.T
        initial = through_norm(self.cls_token.view(1, -1)) / sigma.view(-1, 1) @ self.head.weight.T
        constant = initial + self.head(norm.bias.unsqueeze(0))  # (N, K)
        return HiTTerms(terms, constant, trace.logits)

    def contributions(self, images: Tensor, skip_layers: Collection[int] = ()) -> tuple[Tensor, Tensor]:
        """Contributions (N, L, P, K) whose sum over layers and patches equals the logits (N, K)
        (eq. 6.8 through the final LayerNorm, see the module docstring): the layer terms with the
        constant spread evenly over layers and patches; and the logits."""
        split = self.layer_terms(images, skip_layers)
        share = split.constant / (self.depth * self.num_patches)
        return split.terms + share.view(len(images), 1, 1, -1), split.logits


def _init_weights(module: nn.Module) -> None:
    """ViT initialisation: truncated normal (std 0.02) linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def find_hit(model: nn.Module) -> HiT:
    """The HiT inside ``model`` (itself, or a wrapper's ``network``); raises if there is none."""
    network = getattr(model, "network", model)
    if not isinstance(network, HiT):
        raise ValueError(f"HiT maps need a HiT classifier (arch: hit), got {type(network).__name__}")
    return network
