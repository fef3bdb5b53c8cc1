"""Sequencer: Deep LSTM for Image Classification (Tatsunami & Taki, NeurIPS 2022).

A hierarchical stack of blocks `x + DropPath(RNNMixer(LN(x)))`, `x + DropPath(MLP(LN(x)))` over an NHWC token
map. The 2-D mixer (BiLSTM2D) runs one bidirectional RNN down the columns and one along the rows and fuses
them with a Linear; the vanilla (1-D) mixer runs one BiLSTM over the raster-ordered tokens.

Parameter names follow timm's `sequencer2d_*` exactly (`stages.{i}.blocks.{j}...`, `head.fc`), so timm
weights load as they are; official checkpoints (`blocks.{i}.{j}`, `head`) are remapped on load.
"""
from __future__ import annotations

import math
import re
from typing import Any, Literal, Sequence

import torch
import torch.fx
import torch.nn as nn
from timm.layers import ClassifierHead, DropPath, Mlp, PatchEmbed, lecun_normal_, trunc_normal_
from torch.utils.checkpoint import checkpoint

from lstmvision.layers import FeatureIntermediates, RNN1DMixer, RNN2DMixer
from lstmvision.models.common import check_input, entrypoint, image_size, resize_pos_embed
from lstmvision.models.registry import make_cfg, register_model, register_pretrained

# torch.fx records these as calls (their size checks run on the real input, not on trace-time proxies)
torch.fx.wrap("check_input")
torch.fx.wrap("resize_pos_embed")


class SequencerBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        mixer: nn.Module,
        mlp_ratio: float = 3.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.rnn_tokens = mixer
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.rnn_tokens(self.norm1(x)))
        return x + self.drop_path(self.mlp_channels(self.norm2(x)))


class Downsample(nn.Module):
    """Patch merging (p=2) or per-token linear (p=1) between stages, on NHWC maps."""

    def __init__(self, in_dim: int, out_dim: int, patch_size: int):
        super().__init__()
        self.down = nn.Conv2d(in_dim, out_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, H, W, in_dim) -> (B, in_dim, H, W); conv output (B, out_dim, H/p, W/p) -> (B, H/p, W/p, out_dim)
        return self.down(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class SequencerStage(nn.Module):
    def __init__(self, downsample: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            for block in self.blocks:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return self.blocks(x)


def _per_stage(value: Any, n: int, name: str) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} needs {n} values (one per stage), got {len(values)}")
    return values


class Sequencer(FeatureIntermediates, nn.Module):
    """Sequencer2D (`mixer='2d'`, BiLSTM2D token mixing) or the vanilla Sequencer (`mixer='1d'`).

    Any input height and width of at least `min_input_size` works: the stem and merging convs floor, and the
    RNNs take any length. Features are NHWC (`output_fmt`, channels at `feature_dim`), as in timm.
    `rnn_backend`: backend of the 2-D mixers (`lstmvision.ops.dispatch`; None: the active choice); the
    vanilla 1-D mixer always runs its nn.LSTM module.
    """

    output_fmt = "NHWC"
    feature_dim = -1  # channel axis of forward_features / forward_intermediates(output_fmt='NHWC')
    intermediate_steps = "stages"

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 224,
        global_pool: str = "avg",
        layers: Sequence[int] = (4, 3, 8, 3),
        patch_sizes: Sequence[int] = (7, 2, 1, 1),
        embed_dims: Sequence[int] = (192, 384, 384, 384),
        hidden_sizes: Sequence[int] = (48, 96, 96, 96),
        mlp_ratios: Sequence[float] | float = 3.0,
        mixer: Literal["2d", "1d"] = "2d",
        rnn_type: str = "lstm",
        bidirectional: bool = True,
        union: str = "cat",
        with_fc: bool = True,
        pos_embed: bool = False,
        shuffle_tokens: bool = False,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        drop_path_schedule: Literal["linear", "uniform"] = "linear",
        head_bias: float = 0.0,
        rnn_backend: str | None = None,
    ):
        super().__init__()
        n = len(layers)
        patch_sizes = _per_stage(patch_sizes, n, "patch_sizes")
        embed_dims = _per_stage(embed_dims, n, "embed_dims")
        hidden_sizes = _per_stage(hidden_sizes, n, "hidden_sizes")
        mlp_ratios = _per_stage(mlp_ratios, n, "mlp_ratios")
        if mixer not in ("2d", "1d"):
            raise ValueError(f"mixer must be '2d' (BiLSTM2D) or '1d' (vanilla), got {mixer!r}")
        if drop_path_schedule not in ("linear", "uniform"):
            raise ValueError(f"drop_path_schedule must be 'linear' or 'uniform', got {drop_path_schedule!r}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.shuffle_tokens = shuffle_tokens
        self.in_chans = in_chans
        self.min_input_size = math.prod(patch_sizes)

        self.stem = PatchEmbed(
            img_size=None, patch_size=patch_sizes[0], in_chans=in_chans, embed_dim=embed_dims[0],
            flatten=False, output_fmt="NHWC", strict_img_size=False,
        )
        img_hw = image_size(img_size, self.min_input_size, "Sequencer")
        self.grid_size = (img_hw[0] // patch_sizes[0], img_hw[1] // patch_sizes[0])
        self.pos_embed = nn.Parameter(torch.zeros(1, *self.grid_size, embed_dims[0])) if pos_embed else None

        total = sum(layers)
        if drop_path_schedule == "linear":
            rates = [drop_path_rate * k / max(total - 1, 1) for k in range(total)]
        else:
            rates = [drop_path_rate] * total
        stages, self.feature_info, reduction, k = [], [], patch_sizes[0], 0
        for i in range(n):
            if i == 0:
                down: nn.Module = nn.Identity()
            else:
                down = Downsample(embed_dims[i - 1], embed_dims[i], patch_sizes[i])
                reduction *= patch_sizes[i]
            blocks = []
            for _ in range(layers[i]):
                if mixer == "2d":
                    mix: nn.Module = RNN2DMixer(
                        embed_dims[i], hidden_sizes[i], rnn_type, bidirectional, union, with_fc, rnn_backend
                    )
                else:
                    mix = RNN1DMixer(embed_dims[i], hidden_sizes[i], rnn_type, bidirectional)
                blocks.append(SequencerBlock(embed_dims[i], mix, mlp_ratios[i], proj_drop_rate, rates[k]))
                k += 1
            stages.append(SequencerStage(down, blocks))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(embed_dims[-1], eps=1e-6)
        self.head = ClassifierHead(
            self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, input_fmt="NHWC"
        )
        self.init_weights(head_bias)

    # ----------------------------------------------------------------------------------------- init
    @torch.no_grad()
    def init_weights(self, head_bias: float = 0.0) -> None:
        """Official init: zero head, xavier Linears (tiny-normal MLP biases), lecun-normal convs,
        PyTorch-default RNNs, trunc-normal position embedding."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                if name.startswith("head"):
                    nn.init.zeros_(module.weight)
                    nn.init.constant_(module.bias, head_bias)
                else:
                    nn.init.xavier_uniform_(module.weight)
                    if module.bias is not None:
                        if "mlp" in name:
                            nn.init.normal_(module.bias, std=1e-6)
                        else:
                            nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                lecun_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)

    # -------------------------------------------------------------------------------- timm contract
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"} if self.pos_embed is not None else set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^stem|^pos_embed",
            blocks=[(r"^stages\.(\d+)", None), (r"^norm", (99999,))]
            if coarse
            else [
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass (the switch is per stage: `stages[i].grad_checkpointing`)."""
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head.reset(num_classes, pool_type=global_pool)

    # ------------------------------------------------------------------------------------- forward
    def feature_grid(self, img_hw: Sequence[int]) -> tuple[int, int]:
        """(h, w) of the forward_features map for an (H, W) input."""
        reduction = self.feature_info[-1]["reduction"]  # the convs floor, and floor(floor(a/b)/c) = floor(a/bc)
        return img_hw[-2] // reduction, img_hw[-1] // reduction

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(check_input(x, self.in_chans, self.min_input_size))
        if self.pos_embed is not None:
            # the resize keeps the stored embedding where it fits; traced for ONNX, it always resamples (bicubic to
            # the same size is exact), so that the exported graph works at any input size
            x = x + resize_pos_embed(self.pos_embed, (x.shape[1], x.shape[2]))
        if self.shuffle_tokens and self.training:
            B, H, W, C = x.shape
            perm = torch.randperm(H * W, device=x.device)
            x = x.reshape(B, H * W, C)[:, perm].reshape(B, H, W, C)  # (B, H, W, C) -> (B, H*W, C) -> (B, H, W, C)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled, normalised NHWC features (B, h, w, num_features)."""
        return self.norm(self.stages(self._embed(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # forward_intermediates (stage outputs; `norm` applies the final norm to the last stage's) and
    # prune_intermediate_layers: FeatureIntermediates over the stages
    def _begin(self, x: torch.Tensor) -> torch.Tensor:
        return self._embed(x)

    def _step(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return stage(x)

    def _feature_map(self, x: torch.Tensor, index: int, norm: bool) -> torch.Tensor:
        return self.norm(x) if norm and index == len(self.stages) - 1 else x

    def _finish(self, x: torch.Tensor, complete: bool) -> torch.Tensor:
        return self.norm(x) if complete else x

    # ----------------------------------------------------------------------------- weight layouts
    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map official (okojoalg/sequencer) keys onto ours; timm and lstmvision keys pass unchanged."""
        if not any(k.startswith("blocks.") for k in state_dict):
            return state_dict
        out = {}
        for key, value in state_dict.items():
            m = re.match(r"^blocks\.(\d+)\.(\d+)\.down\.(.*)$", key)
            if m:
                key = f"stages.{int(m.group(1)) + 1}.downsample.down.{m.group(3)}"
            else:
                key = re.sub(r"^blocks\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", key)
            key = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)
            key = key.replace("absolute_pos_embed", "pos_embed")
            out[key] = value
        return out

# --------------------------------------------------------------------------------------- registry
_S = dict(layers=(4, 3, 8, 3), patch_sizes=(7, 2, 1, 1), embed_dims=(192, 384, 384, 384), hidden_sizes=(48, 96, 96, 96))
_M = dict(_S, layers=(4, 3, 14, 3))
_L = dict(_S, layers=(8, 8, 16, 4))
_VANILLA = dict(layers=(4, 3, 8, 3), patch_sizes=(14, 1, 1, 1), embed_dims=(384,) * 4, hidden_sizes=(192,) * 4, mixer="1d")


def _cfg(**kw: Any) -> dict[str, Any]:
    return make_cfg(paper="Sequencer: Deep LSTM for Image Classification (NeurIPS 2022)", **kw)


def _cfg_392(**kw: Any) -> dict[str, Any]:
    return _cfg(input_size=(3, 392, 392), crop_pct=1.0, **kw)


def _build(defaults: dict[str, Any], kwargs: dict[str, Any]) -> Sequencer:
    return Sequencer(**{**defaults, **kwargs})


_H2X = (96, 192, 192, 192)  # twice the hidden sizes of _S
# Small Sequencer2D for 28-32 px images (Fashion-MNIST / MNIST / CIFAR-sized data): patch 4 then 2, so a 28 px
# input gives a 7x7 then 3x3 token map. Used by the `sequencer-small` training recipe.
_TINY = dict(layers=(2, 1), patch_sizes=(4, 2), embed_dims=(48, 96), hidden_sizes=(24, 48), mlp_ratios=2.0,
             num_classes=10)
# The vanilla (1-D) Sequencer at the same small scale, shaped like v_sequencer_s: a patch-4 stem (28 px -> one
# BiLSTM over the 7x7 = 49 raster-ordered tokens), a PW linear (patch 1) between the two stages, no fc, so the
# hidden size is half the width. 0.29 M parameters against sequencer2d_tiny's 0.27 M.
_V_TINY = dict(layers=(2, 1), patch_sizes=(4, 1), embed_dims=(96, 96), hidden_sizes=(48, 48), mlp_ratios=2.0,
               mixer="1d", num_classes=10)


def _cfg_32() -> dict[str, Any]:
    return _cfg(input_size=(3, 32, 32), crop_pct=1.0, num_classes=10)


# name -> (its architecture arguments, its pretrained cfg); the paper's ablations (unidirectional, add, h2x,
# without_fc, vertical, horizontal, GRU, RNN, d4_3x, the vanilla Sequencers) are rows like the others
MODELS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "sequencer2d_s": (_S, _cfg(paper_top1=82.3)),
    "sequencer2d_m": (_M, _cfg(paper_top1=82.8)),
    "sequencer2d_l": (_L, _cfg(paper_top1=83.4)),
    "sequencer2d_s_392": (dict(_S, img_size=392), _cfg_392()),
    "sequencer2d_m_392": (dict(_M, img_size=392), _cfg_392()),
    "sequencer2d_l_392": (dict(_L, img_size=392), _cfg_392(paper_top1=84.6)),
    "sequencer2d_s_unidirectional": (dict(_S, bidirectional=False), _cfg()),
    "sequencer2d_s_add": (dict(_S, union="add"), _cfg()),
    "sequencer2d_s_h2x": (dict(_S, hidden_sizes=_H2X), _cfg()),
    "sequencer2d_s_without_fc": (dict(_S, with_fc=False), _cfg()),
    "sequencer2d_vertical": (dict(_S, hidden_sizes=_H2X, union="vertical", with_fc=False), _cfg()),
    "sequencer2d_s_horizontal": (dict(_S, hidden_sizes=_H2X, union="horizontal", with_fc=False), _cfg()),
    "gru_sequencer2d_s": (dict(_S, rnn_type="gru"), _cfg()),
    "rnn_sequencer2d_s": (dict(_S, rnn_type="rnn"), _cfg()),
    "sequencer2d_l_d4_3x": (dict(_L, embed_dims=(256, 512, 512, 512), hidden_sizes=(64, 128, 128, 128)), _cfg()),
    "v_sequencer_s": (_VANILLA, _cfg()),
    "v_sequencer_s_h": (dict(_S, hidden_sizes=_H2X, mixer="1d"), _cfg()),
    "v_sequencer_s_pe": (dict(_VANILLA, pos_embed=True), _cfg(fixed_input_size=True)),
    "sequencer2d_tiny": (_TINY, _cfg_32()),
    "sequencer2d_small32": (dict(_TINY, layers=(2, 2), embed_dims=(64, 128), hidden_sizes=(32, 64)), _cfg_32()),
    "v_sequencer_tiny": (_V_TINY, _cfg_32()),
}
for _name, (_defaults, _model_cfg) in MODELS.items():
    globals()[_name] = register_model(_model_cfg)(entrypoint(_name, _build, _defaults, __name__))


# ------------------------------------------------------------------------------------ released weights
# timm's copies on the Hugging Face Hub (timm's key names) first, the official GitHub release (official key
# names, converted by `checkpoint_filter_fn`) second. No 392 px fine-tuned weights are published.
_RELEASES = "https://github.com/okojoalg/sequencer/releases/download/weights"
for _size, _top1 in (("s", 82.3), ("m", 82.8), ("l", 83.4)):
    register_pretrained(f"sequencer2d_{_size}.in1k", hf_hub_id=f"timm/sequencer2d_{_size}.in1k",
                        url=f"{_RELEASES}/sequencer2d_{_size}.pth", file_name=f"sequencer2d_{_size}.pth", top1=_top1,
                        license="apache-2.0", origin_url="https://github.com/okojoalg/sequencer")
