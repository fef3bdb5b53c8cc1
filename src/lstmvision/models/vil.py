"""Vision-LSTM (ViL): xLSTM as Generic Vision Backbone (Alkin et al., 2024), v2 and v1.

An isotropic stack over patch tokens: patch embedding + learned 2-D position embedding, then mLSTM sub-blocks
`x + DropPath(mLSTMLayer(LN(x)))` whose scan direction alternates (row-major from the top left, then from the
bottom right; optionally also column-major), a norm, a pooling of the tokens (by default the first and the last
token) and a Linear head. There is no MLP: the sub-block is gated-MLP shaped (up-projection to two branches of
width 2·dim, a convolution + block-diagonal q/k/v + mLSTM on one branch, SiLU gating by the other,
down-projection).

- v2 (`vil2_*`): depthwise 3x3 Conv2d on the real token grid, biases in projections and norms, the first and
  last token concatenated (2·dim) before the head, optional `pool_norm` (LayerNorm(2·dim)) after pooling,
  which the released checkpoints need.
- v1 (`vil_*`): causal depthwise Conv1d (k=4) along the sequence, no projection or norm biases, the mean of the
  first and last token, LayerNorm after pooling, optional `post_norm` (offset LN) after the blocks.

The official constructors call both optional norms `legacy_norm`, each meaning its version's norm above; the
registered builders accept `legacy_norm` as that per-version alias (v2: `pool_norm`, v1: `post_norm`), so the
official arguments and the released checkpoints work unchanged. The model class itself only knows
`pool_norm` and `post_norm`.

Shapes follow timm: `forward_features` gives the normalised NHWC token map (channels `num_features` = dim at
`feature_dim` = -1), `forward_head(pre_logits=True)` and `num_classes=0` give the pooled vector
(`head_hidden_size`: 2·dim for bilateral_flatten, dim otherwise), `global_pool=''` returns the NHWC map
unpooled and `global_pool='to_image'` the same map as (B, dim, h, w) for dense tasks.

Design space (the paper's ablations): `direction_design` (alternating, quad_alternating, unidirectional,
bidirectional, bidirectional_shared, quaddirectional) and the `middle` and `cls` (class tokens in the middle of
the sequence, skipping the 2-D conv) poolings; see VisionLSTM and the `vil_tiny_dir_*` / `vil_tiny_pool_*` configs.

Parameter names: `depth` always counts sub-blocks here (the official v2 counts pairs). Native keys are
`patch_embed.proj`, `pos_embed` (1, h, w, dim), `blocks.{j}.norm`, `blocks.{j}.layer.{proj_up, conv, q_proj,
k_proj, v_proj, mlstm_cell.{igate, fgate, outnorm}, learnable_skip, proj_down}`, `norm` (after the blocks),
`pool_norm` (after pooling) and `head`; multi-direction designs add `blocks.{j}.extra_layers.{k}.*` (the layers of
the further directions), `global_pool="cls"` adds `cls_token` (1, num_cls_tokens, dim). `checkpoint_filter_fn`
converts the official standalone v1 and v2 layouts and the released training-code layout (detected automatically)
and resizes the position embedding.
"""
from __future__ import annotations

import math
import re
from typing import Any, Literal, Sequence

import torch
import torch.fx
import torch.nn as nn
from timm.layers import DropPath, register_notrace_module, trunc_normal_
from torch.utils.checkpoint import checkpoint

from lstmvision.layers import FeatureIntermediates, MLSTMLayer, OffsetLayerNorm, from_scan, to_scan
from lstmvision.models.common import check_input, entrypoint, image_size, resize_pos_embed
from lstmvision.models.registry import make_cfg, register_model, register_pretrained
from lstmvision.ops.mlstm import resolve_mlstm_backend

# torch.fx records these as calls (their size checks run on the real input, not on trace-time proxies)
torch.fx.wrap("check_input")
torch.fx.wrap("resize_pos_embed")

# "" : the NHWC token map unpooled (timm's feature mode); "to_image": the same map as (B, C, h, w)
# "middle": the patch token at index S//2 of the row-major sequence; "cls": the class token(s) (see VisionLSTM)
POOLINGS = ("bilateral_flatten", "bilateral_avg", "avg", "first", "last", "middle", "cls", "", "to_image")
UNPOOLED = ("", "to_image")
_POOL_ALIASES = {
    "bilateral_concat": "bilateral_flatten", "bilateral_mean": "bilateral_avg", "mean": "avg",
    "mean_patch": "avg", "first_token": "first", "last_token": "last", "middle_token": "middle",
    "middle_patch": "middle", "cls_token": "cls", "class_token": "cls", "none": "", None: "",
}
# direction design -> (the scan directions of each sub-block, cycled over the sub-blocks; whether one sub-block's
# directions share one mLSTM layer). Directions: see lstmvision.layers.to_scan. Several directions in a sub-block are summed.
DIRECTION_DESIGNS: dict[str, tuple[tuple[tuple[int, ...], ...], bool]] = {
    "alternating": (((0,), (1,)), False),
    "quad_alternating": (((0,), (1,), (2,), (3,)), False),
    "unidirectional": (((0,),), False),
    "bidirectional": (((0, 1),), False),
    "bidirectional_shared": (((0, 1),), True),
    "quaddirectional": (((0, 1, 2, 3),), False),
}
# the official `alternation` argument (training code: mLSTMLayerConfig.alternation) -> its direction design
ALTERNATIONS = {"bidirectional": "alternating", "quaddirectional": "quad_alternating"}


def _direction_design(direction_design: str | None, alternation: str | None) -> str:
    """The direction design from `direction_design` or its official alias `alternation` (default: alternating)."""
    if alternation is not None:
        if alternation not in ALTERNATIONS:
            raise ValueError(f"alternation must be one of {sorted(ALTERNATIONS)}, got {alternation!r}")
        if direction_design is not None and direction_design != ALTERNATIONS[alternation]:
            raise ValueError(
                f"alternation={alternation!r} means direction_design={ALTERNATIONS[alternation]!r}, "
                f"contradicting direction_design={direction_design!r}"
            )
        return ALTERNATIONS[alternation]
    design = direction_design or "alternating"
    if design not in DIRECTION_DESIGNS:
        raise ValueError(f"direction_design must be one of {sorted(DIRECTION_DESIGNS)}, got {design!r}")
    return design


def _pool_name(pool: str | None) -> str:
    pool = _POOL_ALIASES.get(pool, pool)
    if pool not in POOLINGS:
        raise ValueError(f"global_pool must be one of {POOLINGS} (or an alias in {sorted(k for k in _POOL_ALIASES if k)}), got {pool!r}")
    return pool


@register_notrace_module  # a leaf for timm's fx tracing: the mLSTM dispatches on the real input
class ViLBlock(nn.Module):
    """One sub-block: x + DropPath(Σ_d scan_d⁻¹(mLSTMLayer_d(scan_d(LN(x))))) over its scan directions d, on an
    NHWC (B, h, w, dim) token map (and the class tokens, when given).

    With several directions the LayerNorm and the residual are shared; the mLSTM layer (up-projection to
    down-projection) is one per direction (`layer` for the first, `extra_layers` for the others), or one for
    all of them with `shared=True`.
    """

    def __init__(
        self, dim: int, directions: Sequence[int] = (0,), shared: bool = False, drop_path: float = 0.0,
        norm_bias: bool = True, **layer_kwargs: Any,
    ):
        super().__init__()
        self.directions = tuple(directions)
        self.shared = shared
        self.norm = OffsetLayerNorm(dim, bias=norm_bias, eps=1e-5)
        self.layer = MLSTMLayer(dim, norm_bias=norm_bias, **layer_kwargs)
        n_extra = 0 if shared else len(self.directions) - 1
        self.extra_layers = nn.ModuleList(MLSTMLayer(dim, norm_bias=norm_bias, **layer_kwargs) for _ in range(n_extra))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    @property
    def direction(self) -> int:
        """The first (for one-direction designs the only) scan direction."""
        return self.directions[0]

    def scan_layers(self) -> list[tuple[int, MLSTMLayer]]:
        """(direction, the layer that reads it) for each direction of this sub-block."""
        if self.shared:
            return [(d, self.layer) for d in self.directions]
        return list(zip(self.directions, [self.layer, *self.extra_layers]))

    def _mix(self, y: torch.Tensor, grid: tuple[int, int], num_cls: int) -> torch.Tensor:
        """The summed layer outputs over this sub-block's directions, row-major (B, h·w [+ num_cls], C)."""
        out = None
        for direction, layer in self.scan_layers():
            seq, scan_grid = to_scan(y, grid, direction, num_cls)
            cls_at = ((grid[0] * grid[1]) // 2, num_cls) if num_cls else None
            o = from_scan(layer(seq, scan_grid, cls_at, reverse=direction % 2 == 1), grid, direction, num_cls)
            out = o if out is None else out + o
        assert out is not None
        return out

    def forward(self, x: torch.Tensor, cls: torch.Tensor | None = None):
        """(B, h, w, C) -> (B, h, w, C); with class tokens `cls` (B, n, C): -> (map, class tokens)."""
        B, h, w, C = x.shape
        if cls is None:
            y = self._mix(self.norm(x).reshape(B, h * w, C), (h, w), 0)  # (B, h, w, C) -> (B, h*w, C)
            return x + self.drop_path(y.reshape(B, h, w, C))  # (B, h*w, C) -> (B, h, w, C)
        # class tokens in the middle of the row-major sequence; one sequence, so one DropPath draw per sample
        mid, n = (h * w) // 2, cls.shape[1]
        t = x.reshape(B, h * w, C)  # (B, h, w, C) -> (B, h*w, C)
        seq = torch.cat([t[:, :mid], cls, t[:, mid:]], dim=1)
        seq = seq + self.drop_path(self._mix(self.norm(seq), (h, w), n))
        # patch tokens (B, h*w, C) -> (B, h, w, C); class tokens (B, n, C)
        return torch.cat([seq[:, :mid], seq[:, mid + n:]], dim=1).reshape(B, h, w, C), seq[:, mid:mid + n]


class VisionLSTM(FeatureIntermediates, nn.Module):
    """Vision-LSTM, v2 or v1 depending on the options (see the module docstring and the registered models).

    Any input of at least `min_input_size` (the patch size) works: the patch grid (h, w) is taken from the
    input, the position embedding is resized (bicubic) when the grid differs from the one it was built for, and
    the 2-D conv uses the real grid.

    `direction_design` (see DIRECTION_DESIGNS; the official `alternation` values are aliases) sets the scan
    directions of each sub-block. `global_pool='cls'` builds `num_cls_tokens` learnable class tokens
    (`cls_token`, no position embedding) inserted in the middle (index h·w // 2) of the row-major patch sequence
    before the blocks, the official `cls_tokens: {location: middle}`. Such a model's `forward_features` returns
    the normalised tokens as a sequence (B, num_prefix_tokens + h·w, C), class tokens first (timm's ViT layout),
    its feature maps (`forward_intermediates`, `features_only`) hold the patch tokens only, and its other
    poolings read the patch tokens only. In the v2 2-D conv the class tokens skip the conv (its output for them
    is their input); the v1 causal 1-D conv treats them as ordinary sequence positions.
    """

    output_fmt = "NHWC"
    feature_dim = -1  # channel axis of forward_features / forward_intermediates(output_fmt='NHWC')

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        stride: int | None = None,
        embed_dim: int = 192,
        depth: int = 24,
        num_heads: int = 4,
        expansion: int = 2,
        qkv_block_size: int = 4,
        conv_kind: Literal["2d", "causal1d"] = "2d",
        conv_kernel_size: int | None = None,
        proj_bias: bool = True,
        norm_bias: bool = True,
        alternation: Literal["bidirectional", "quaddirectional"] | None = None,
        direction_design: str | None = None,
        global_pool: str = "bilateral_flatten",
        num_cls_tokens: int = 1,
        post_norm: bool = True,
        post_norm_bias: bool | None = None,
        post_norm_eps: float = 1e-6,
        pool_norm: bool = False,
        pool_norm_eps: float = 1e-5,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        drop_path_decay: bool = False,
        drop_path_groups: int = 1,
        init_mode: Literal["original", "original-fixed"] = "original",
        mlstm_backend: str | None = None,
        mlstm_chunk_size: int = 64,
    ):
        super().__init__()
        self.direction_design = _direction_design(direction_design, alternation)
        if init_mode not in ("original", "original-fixed"):
            raise ValueError(f"init_mode must be 'original' or 'original-fixed', got {init_mode!r}")
        if mlstm_backend is not None:
            resolve_mlstm_backend(mlstm_backend, 1)  # fail early on a typo
        self.num_classes = num_classes
        self.global_pool = _pool_name(global_pool)
        if self.global_pool == "cls" and num_cls_tokens < 1:
            raise ValueError(f"global_pool='cls' needs num_cls_tokens >= 1, got {num_cls_tokens}")
        # class tokens exist from construction on; reset_classifier may pool differently but keeps them
        self.num_prefix_tokens = num_cls_tokens if self.global_pool == "cls" else 0
        self.embed_dim = self.num_features = embed_dim
        self.stride = stride or patch_size
        self.patch_size = self.min_input_size = patch_size
        self.in_chans = in_chans
        self.init_mode = init_mode
        self.grad_checkpointing = False
        self.grid_size = self.feature_grid(image_size(img_size, patch_size, "Vision-LSTM"))

        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=self.stride)
        self.pos_embed = nn.Parameter(torch.zeros(1, *self.grid_size, embed_dim))
        if self.num_prefix_tokens:
            self.cls_token = nn.Parameter(torch.zeros(1, self.num_prefix_tokens, embed_dim))

        # drop path: constant, or linear over `drop_path_groups`-sized groups of sub-blocks (v2: pairs)
        n_groups = -(-depth // drop_path_groups)
        if drop_path_decay and n_groups > 1:
            group_rates = torch.linspace(0, drop_path_rate, n_groups).tolist()
        else:
            group_rates = [drop_path_rate] * n_groups
        cycle, shared = DIRECTION_DESIGNS[self.direction_design]
        layer_kwargs = dict(
            expansion=expansion, num_heads=num_heads, qkv_block_size=qkv_block_size, conv_kind=conv_kind,
            conv_kernel_size=conv_kernel_size, proj_bias=proj_bias, mlstm_backend=mlstm_backend,
            mlstm_chunk_size=mlstm_chunk_size,
        )
        self.blocks = nn.ModuleList(
            ViLBlock(embed_dim, cycle[j % len(cycle)], shared, group_rates[j // drop_path_groups], norm_bias, **layer_kwargs)
            for j in range(depth)
        )
        self.feature_info = [dict(num_chs=embed_dim, reduction=self.stride, module=f"blocks.{j}") for j in range(depth)]
        bias = norm_bias if post_norm_bias is None else post_norm_bias
        self.norm = OffsetLayerNorm(embed_dim, bias=bias, eps=post_norm_eps) if post_norm else nn.Identity()
        self._pool_norm, self._pool_norm_eps = pool_norm, pool_norm_eps
        self.head_drop = nn.Dropout(drop_rate)
        self._build_head(num_classes)
        self.init_weights()

    # ------------------------------------------------------------------------------------------ head
    @property
    def head_hidden_size(self) -> int:
        if self.global_pool == "bilateral_flatten":
            return 2 * self.embed_dim
        return self.num_prefix_tokens * self.embed_dim if self.global_pool == "cls" else self.embed_dim

    def _build_head(self, num_classes: int) -> None:
        if self.global_pool in UNPOOLED and num_classes:
            raise ValueError(f"global_pool={self.global_pool!r} (unpooled token map output) needs num_classes=0")
        if self.global_pool == "cls" and not self.num_prefix_tokens:
            raise ValueError("global_pool='cls' needs class tokens: build the model with global_pool='cls'")
        if self.global_pool == "to_image" and self.num_prefix_tokens:
            raise ValueError("global_pool='to_image' does not fit a class-token model (its forward_features is a "
                             "token sequence); use forward_intermediates for maps")
        pooled = self.head_hidden_size
        use_norm = self._pool_norm and self.global_pool not in UNPOOLED
        self.pool_norm = nn.LayerNorm(pooled, eps=self._pool_norm_eps) if use_norm else nn.Identity()
        self.head = nn.Linear(pooled, num_classes) if num_classes > 0 else nn.Identity()

    # ------------------------------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self) -> None:
        """The official init: xavier patch embedding, trunc-normal(0.02) position embedding, 'small init' up
        and q/k/v projections, Wang-init down projection (num_blocks = 1 as in the released models, or the
        number of sub-blocks with init_mode='original-fixed'), zero-weight gates with forget biases
        linspace(3, 6), unit skip, offset norms at 0, PyTorch-default convs, trunc-normal(2e-5) head."""
        D = self.embed_dim
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # (D, in_chans, p, p) -> (D, in_chans*p*p)
        nn.init.zeros_(self.patch_embed.proj.bias)
        trunc_normal_(self.pos_embed, std=0.02)
        small = math.sqrt(2 / (5 * D))
        num_blocks = len(self.blocks) if self.init_mode == "original-fixed" else 1
        wang = 2 / (num_blocks * math.sqrt(D))
        for layer in (layer for block in self.blocks for layer in (block.layer, *block.extra_layers)):
            for lin, std in ((layer.proj_up, small), (layer.q_proj, small), (layer.k_proj, small), (layer.v_proj, small), (layer.proj_down, wang)):
                nn.init.normal_(lin.weight, std=std)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
            cell = layer.mlstm_cell
            nn.init.zeros_(cell.igate.weight)
            nn.init.normal_(cell.igate.bias, std=0.1)
            nn.init.zeros_(cell.fgate.weight)
            cell.fgate.bias.copy_(torch.linspace(3.0, 6.0, cell.num_heads))
            nn.init.ones_(layer.learnable_skip)
        for m in self.modules():
            if isinstance(m, OffsetLayerNorm):
                nn.init.zeros_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.num_prefix_tokens:
            trunc_normal_(self.cls_token, std=0.02)  # as the position embedding (the official code's is not known)
        self._init_head()

    @torch.no_grad()
    def _init_head(self) -> None:
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=2e-5)
            nn.init.zeros_(self.head.bias)

    # --------------------------------------------------------------------------------- timm contract
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"} if self.num_prefix_tokens else {"pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        # One layer per block pair (the official layer-wise lr decay groups two sub-blocks: `group_two_blocks`):
        # an odd sub-block's key ends in timm's MATCH_PREV_GROUP, which joins it to the even one before it.
        return dict(stem=r"^patch_embed|^pos_embed|^cls_token", blocks=[(r"^blocks\.(\d*[02468])\.", None),
                                                             (r"^blocks\.(\d*[13579])\.", (99999,)),
                                                             (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New head (and pool norm when the pooled width changes) for `num_classes`; 0 removes it."""
        old_width = self.head_hidden_size
        if global_pool is not None:
            self.global_pool = _pool_name(global_pool)
        self.num_classes = num_classes
        old_norm = self.pool_norm
        self._build_head(num_classes)
        if isinstance(old_norm, nn.LayerNorm) and self.head_hidden_size == old_width and isinstance(self.pool_norm, nn.LayerNorm):
            self.pool_norm = old_norm  # keep the trained pool norm when it still fits
        self._init_head()
        ref = self.pos_embed
        self.pool_norm.to(ref.device, ref.dtype)
        self.head.to(ref.device, ref.dtype)

    # --------------------------------------------------------------------------------------- forward
    def feature_grid(self, img_hw: Sequence[int]) -> tuple[int, int]:
        """(h, w) of the forward_features map (the patch grid) for an (H, W) input."""
        h, w = img_hw[-2:]
        return (h - self.patch_size) // self.stride + 1, (w - self.patch_size) // self.stride + 1

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        # (B, D, h, w) -> (B, h, w, D)
        x = self.patch_embed.proj(check_input(x, self.in_chans, self.min_input_size)).permute(0, 2, 3, 1)
        return x + resize_pos_embed(self.pos_embed, (x.shape[1], x.shape[2]))  # (B, h, w, D)

    def _run_block(self, block: nn.Module, x: torch.Tensor, cls: torch.Tensor | None = None):
        args = (x,) if cls is None else (x, cls)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def _cls_tokens(self, x: torch.Tensor) -> torch.Tensor | None:
        # a copy, not a view: a view of the parameter made under no_grad requires grad without a grad_fn,
        # which module hooks that watch block inputs (FlopCounterMode's) cannot handle
        return self.cls_token.expand(x.shape[0], -1, -1).clone() if self.num_prefix_tokens else None

    def _final_norm(self, x: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        """The final norm of the map, or (class-token models) of the sequence [class tokens, row-major patches]."""
        # x (B, h, w, C) -> (B, h*w, C), after cls (B, n, C)
        return self.norm(x) if cls is None else self.norm(torch.cat([cls, x.flatten(1, 2)], dim=1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised tokens on their grid, NHWC (B, h, w, num_features); class-token models: the sequence
        (B, num_prefix_tokens + h·w, num_features), class tokens first."""
        x = self._embed(x)
        cls = self._cls_tokens(x)
        for block in self.blocks:
            if cls is None:
                x = self._run_block(block, x)
            else:
                x, cls = self._run_block(block, x, cls)
        return self._final_norm(x, cls)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w, C) or (class-token models) (B, n + h·w, C) -> pooled (B, C, 2C or n·C); unpooled: the
        forward_features output itself ('') or the map as (B, C, h, w) ('to_image')."""
        if self.global_pool == "":
            return x
        if self.global_pool == "to_image":
            return x.permute(0, 3, 1, 2)  # (B, h, w, C) -> (B, C, h, w)
        n = self.num_prefix_tokens
        if self.global_pool == "cls":
            return x[:, :n].flatten(1)  # (B, n, C) -> (B, n*C)
        t = x[:, n:] if n else x.flatten(1, 2)  # (B, h, w, C) -> (B, h*w, C); the patch tokens, row-major
        if self.global_pool == "middle":
            return t[:, t.shape[1] // 2]
        if self.global_pool == "bilateral_flatten":
            return torch.cat([t[:, 0], t[:, -1]], dim=-1)
        if self.global_pool == "bilateral_avg":
            return (t[:, 0] + t[:, -1]) / 2
        if self.global_pool == "avg":
            return t.mean(dim=1)
        return t[:, 0] if self.global_pool == "first" else t[:, -1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool_norm(self.pool(x))
        if self.global_pool in UNPOOLED:
            return x
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # forward_intermediates (sub-block outputs, patch tokens only; `norm` applies the final norm to each) and
    # prune_intermediate_layers: FeatureIntermediates over the blocks, the state a (map, class tokens) pair
    def _begin(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self._embed(x)
        return x, self._cls_tokens(x)

    def _step(self, block: nn.Module, state: tuple[torch.Tensor, torch.Tensor | None]):
        x, cls = state
        return (self._run_block(block, x), None) if cls is None else self._run_block(block, x, cls)

    def _feature_map(self, state: tuple[torch.Tensor, torch.Tensor | None], index: int, norm: bool) -> torch.Tensor:
        return self.norm(state[0]) if norm else state[0]

    def _finish(self, state: tuple[torch.Tensor, torch.Tensor | None], complete: bool) -> torch.Tensor:
        return self._final_norm(*state)

    # ---------------------------------------------------------------------------------- weight layouts
    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official layouts -> ours (auto-detected), then the position embedding resized to our grid.

        - released training-code checkpoints (v1 and v2): `xlstm.blocks.{j}.xlstm.*`, `xlstm.blocks.{j}.xlstm_norm.*`,
          `.conv1d.`, `xlstm.post_blocks_norm.*`, `head.0.*` (the pool norm), `head.1.*` (the classifier);
        - standalone v2 (`VisionLSTM2`): `blocks.{p}.rowwise_from_{top_left|bot_right}.*` (sub-block 2p / 2p+1),
          `norm`, `legacy_norm` (the pool norm);
        - standalone v1 (`VisionLSTM`): `blocks.{j}.layer.conv1d.conv.*`, `legacy_norm` (after the blocks),
          `norm` (after pooling);
        - lstmvision checkpoints pass unchanged.
        """
        sd = convert_official_vil(state_dict)
        pe = sd.get("pos_embed")
        if pe is not None and pe.dim() == 4 and tuple(pe.shape[1:3]) != tuple(self.pos_embed.shape[1:3]):
            sd["pos_embed"] = resize_pos_embed(pe, tuple(self.pos_embed.shape[1:3]))
        return sd


def convert_official_vil(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a released, standalone v2 or standalone v1 state dict onto lstmvision's ViL keys (see above)."""
    keys = list(state_dict)
    if any(k.startswith("xlstm.blocks.") or k.startswith("xlstm.post_blocks_norm") for k in keys):
        layout = "released"
    elif any(".rowwise_from_" in k for k in keys):
        layout = "v2"
    elif "pos_embed.embed" in state_dict:
        layout = "v1"
    else:
        return dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = key
        if layout == "released":
            new = re.sub(r"^xlstm\.blocks\.(\d+)\.xlstm\.", r"blocks.\1.layer.", new)
            new = re.sub(r"^xlstm\.blocks\.(\d+)\.xlstm_norm\.", r"blocks.\1.norm.", new)
            new = re.sub(r"^xlstm\.post_blocks_norm\.", "norm.", new)
            new = re.sub(r"^head\.0\.", "pool_norm.", new)
            new = re.sub(r"^head\.1\.", "head.", new)
        elif layout == "v2":
            m = re.match(r"^blocks\.(\d+)\.rowwise_from_(top_left|bot_right)\.(.*)$", new)
            if m:
                new = f"blocks.{2 * int(m.group(1)) + (m.group(2) == 'bot_right')}.{m.group(3)}"
            new = re.sub(r"^legacy_norm\.", "pool_norm.", new)
        else:  # v1
            new = re.sub(r"^norm\.", "pool_norm.", new)
            new = re.sub(r"^legacy_norm\.", "norm.", new)
        new = new.replace(".layer.conv1d.conv.", ".layer.conv.").replace(".layer.conv1d.", ".layer.conv.")
        new = re.sub(r"^pos_embed\.embed$", "pos_embed", new)
        out[new] = value
    return out


# ------------------------------------------------------------------------------------------- registry
_V2 = dict(conv_kind="2d", proj_bias=True, norm_bias=True, global_pool="bilateral_flatten", post_norm=True,
           post_norm_eps=1e-6, pool_norm_eps=1e-5, drop_path_groups=2)
_V1 = dict(conv_kind="causal1d", proj_bias=False, norm_bias=False, global_pool="bilateral_avg", post_norm_bias=False,
           post_norm_eps=1e-6, pool_norm=True, pool_norm_eps=1e-6, drop_path_groups=1)


def _cfg(**kw: Any) -> dict[str, Any]:
    return make_cfg(
        paper="Vision-LSTM: xLSTM as Generic Vision Backbone (arXiv 2406.04303)",
        first_conv="patch_embed.proj", classifier="head", crop_pct=1.0, **kw,
    )


def _norm_alias(kw: dict[str, Any], name: str) -> dict[str, Any]:
    """Resolve the official `legacy_norm` argument to this version's norm option `name` (default True, as the
    released checkpoints need); giving both with different values is an error."""
    if "legacy_norm" in kw:
        legacy = bool(kw.pop("legacy_norm"))
        if name in kw and bool(kw[name]) != legacy:
            raise ValueError(f"legacy_norm={legacy} contradicts {name}={kw[name]} (legacy_norm is {name} here)")
        kw[name] = legacy
    kw[name] = bool(kw.get(name, True))
    return kw


def _build_v2(defaults: dict[str, Any], kwargs: dict[str, Any]) -> VisionLSTM:
    """v2: `pool_norm` (official name `legacy_norm`) is the LayerNorm(2·dim) after pooling."""
    return VisionLSTM(**_norm_alias({**_V2, **defaults, **kwargs}, "pool_norm"))


def _build_v1(defaults: dict[str, Any], kwargs: dict[str, Any]) -> VisionLSTM:
    """v1: `post_norm` (official name `legacy_norm`) is the offset LayerNorm after the blocks."""
    return VisionLSTM(**_norm_alias({**_V1, **defaults, **kwargs}, "post_norm"))


# The paper's ablations, on ViL-T v1 (the official `yamls/pretrain/vil/v1/...`). Directions: ImageNet-100,
# 400 epochs at 128 px; poolings: ImageNet-1K, 400 epochs at 192 px. The reported numbers are not known here.
_DIRECTION_ABLATION = dict(embed_dim=192, depth=24, num_classes=100, img_size=128)
_POOL_ABLATION = dict(embed_dim=192, depth=24, img_size=192)
_POOL_OPTIONS = dict(avg={}, bilateral_flatten={}, bilateral_avg={}, middle={}, cls=dict(num_cls_tokens=1))


def _ablation_cfg(img_size: int, num_classes: int = 1000) -> dict[str, Any]:
    return _cfg(input_size=(3, img_size, img_size), num_classes=num_classes)


# name -> (builder, its architecture arguments, its pretrained cfg)
MODELS: dict[str, tuple[Any, dict[str, Any], dict[str, Any]]] = {
    "vil2_tiny": (_build_v2, dict(embed_dim=192, depth=24), _cfg(paper_top1=78.3)),
    "vil2_small": (_build_v2, dict(embed_dim=384, depth=24), _cfg(paper_top1=81.5)),
    "vil2_base": (_build_v2, dict(embed_dim=768, depth=24), _cfg(paper_top1=82.4)),
    "vil2_large": (_build_v2, dict(embed_dim=1024, depth=48), _cfg()),
    "vil_tiny": (_build_v1, dict(embed_dim=192, depth=24), _cfg(paper_top1=77.3)),
    "vil_tinyplus": (_build_v1, dict(embed_dim=192, depth=29), _cfg(paper_top1=78.1)),
    "vil_small": (_build_v1, dict(embed_dim=384, depth=24), _cfg(paper_top1=80.7)),
    "vil_smallplus": (_build_v1, dict(embed_dim=384, depth=26), _cfg(paper_top1=80.9)),
    "vil_base": (_build_v1, dict(embed_dim=768, depth=24), _cfg(paper_top1=81.6)),
    "vil_tinyplus_stride8": (_build_v1, dict(embed_dim=192, depth=29, stride=8), _cfg(paper_top1=80.0)),
    "vil_smallplus_stride8": (_build_v1, dict(embed_dim=384, depth=26, stride=8), _cfg(paper_top1=82.2)),
    "vil_base_stride8": (_build_v1, dict(embed_dim=768, depth=24, stride=8), _cfg(paper_top1=82.7)),
    **{f"vil_tiny_dir_{design}": (_build_v1, dict(_DIRECTION_ABLATION, direction_design=design), _ablation_cfg(128, 100))
       for design in ("unidirectional", "alternating", "quad_alternating", "bidirectional", "bidirectional_shared",
                      "quaddirectional")},
    **{f"vil_tiny_pool_{pool}": (_build_v1, dict(_POOL_ABLATION, global_pool=pool, **extra), _ablation_cfg(192))
       for pool, extra in _POOL_OPTIONS.items()},
}
for _name, (_build, _defaults, _model_cfg) in MODELS.items():
    globals()[_name] = register_model(_model_cfg)(entrypoint(_name, _build, _defaults, __name__))


# ------------------------------------------------------------------------------------ released weights
# The publisher's `.th` files ({"state_dict": ...} in the training code's key layout, converted by
# `checkpoint_filter_fn`); no Hub copy exists. Tag `in1k_eN`: ImageNet-1k, N pre-training epochs. The official
# hubconf's "vil-tinyplus-stride8" points at the non-stride file, so it is not registered as a stride-8 checkpoint.
_VIL_DOWNLOADS = "https://ml.jku.at/research/vision_lstm/download"
_VIL_RELEASES = (  # (tag, file, top-1); the first tag of an architecture is its default
    ("vil2_tiny.in1k_e800", "vil2_tiny16_e800_in1k.th", 78.3),
    ("vil2_tiny.in1k_e400", "vil2_tiny16_e400_in1k.th", 77.2),
    ("vil2_small.in1k_e400", "vil2_small16_e400_in1k.th", 81.5),
    ("vil2_base.in1k_e400", "vil2_base16_e400_in1k.th", 82.4),
    ("vil_tiny.in1k_e800", "vil_tiny16_e800_in1k.th", 77.3),
    ("vil_tiny.in1k_e400", "vil_tiny16_e400_in1k.th", 76.1),
    ("vil_tinyplus.in1k_e800", "vil_tinyplus16_e800_in1k.th", 78.1),
    ("vil_tinyplus.in1k_e400", "vil_tinyplus16_e400_in1k.th", 77.2),
    ("vil_small.in1k_e400", "vil_small16_e400_in1k.th", 80.7),
    ("vil_smallplus.in1k_e400", "vil_smallplus16_e400_in1k.th", 80.9),
    ("vil_smallplus_stride8.in1k_e400", "vil_smallplus16_e400_in1k_stride8.th", 82.2),
    ("vil_base.in1k_e400", "vil_base16_e400_in1k.th", 81.6),
    ("vil_base_stride8.in1k_e400", "vil_base16_e400_in1k_stride8.th", 82.7),
)
for _tag, _file, _top1 in _VIL_RELEASES:
    register_pretrained(_tag, url=f"{_VIL_DOWNLOADS}/{_file}", file_name=_file, top1=_top1,
                        license="unspecified (model code: Apache-2.0)", origin_url="https://github.com/NX-AI/vision-lstm")
