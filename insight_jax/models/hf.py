"""Hugging Face checkpoints in and out: config.json <-> TransformerConfig, safetensors <-> state.

Supported: ``Qwen3ForCausalLM``, ``Qwen2ForCausalLM`` and ``LlamaForCausalLM`` checkpoints
(config.json in the transformers 4 or 5 layout, weights as ``model.safetensors`` or shards with
``model.safetensors.index.json``; bf16 / fp16 / fp32).

Loading is lazy: a small reader of the safetensors format maps each file with ``np.memmap``
and every parameter is built with ``jax.make_array_from_callback``, whose callback reads only the
slice its device holds (after the transpose / head split of ``WEIGHT_TABLE``). Host memory stays
near one tensor slice, whatever the model size, and each host of a pod reads only its shards.

Saving gathers one tensor at a time (``jax.device_get``; single-process only) and writes the
same format with ``WEIGHT_TABLE`` run backwards, plus config.json (transformers 5 layout) and
generation_config.json, so ``transformers.AutoModelForCausalLM.from_pretrained`` reads it.

The safetensors format (its public spec): 8 bytes little-endian header length N, N bytes of
JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then
the raw little-endian tensor bytes; offsets are relative to the end of the header.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from insight_jax import sharding as sh
from insight_jax.models.transformer import Transformer, TransformerConfig

# architectures entry -> model_type
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "Qwen3ForCausalLM": "qwen3",
    "Qwen2ForCausalLM": "qwen2",
    "LlamaForCausalLM": "llama",
}

# TransformerConfig fields that change numerics or memory but not the weights: the only ones a
# caller may set on top of a checkpoint's config.
NUMERIC_OVERRIDES = frozenset(
    {"dtype", "param_dtype", "scan_layers", "remat", "logits_chunk", "max_seq_len"}
)

# Tensors some exporters write that carry no weights (recomputed from the config).
_HARMLESS = re.compile(r"(^|\.)rotary_emb\.inv_freq$")

_DTYPE_NAMES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_ST_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}
_MAX_HEADER_BYTES = 100 * 2**20  # the safetensors reference implementation's limit

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)


# ----------------------------------------------------------------------------------------------
# config.json <-> TransformerConfig
# ----------------------------------------------------------------------------------------------


def read_hf_config(path: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a checkpoint directory."""
    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        raise ValueError(f"{file}: not found (a Hugging Face checkpoint directory has one)")
    with open(file) as f:
        try:
            cfg = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def _architecture(hf: Mapping[str, Any]) -> str:
    archs = hf.get("architectures")
    model_type = hf.get("model_type")
    supported = ", ".join(SUPPORTED_ARCHITECTURES)
    if archs:
        if not isinstance(archs, list) or len(archs) != 1:
            raise ValueError(f"config 'architectures'={archs!r}: expected one of [{supported}]")
        arch = archs[0]
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ValueError(f"config 'architectures'={archs!r} is not supported; use {supported}")
        if model_type is not None and model_type != SUPPORTED_ARCHITECTURES[arch]:
            raise ValueError(
                f"config 'model_type'={model_type!r} disagrees with 'architectures'={archs!r} "
                f"(expected {SUPPORTED_ARCHITECTURES[arch]!r})"
            )
        return arch
    by_type = {t: a for a, t in SUPPORTED_ARCHITECTURES.items()}
    if model_type not in by_type:
        raise ValueError(
            f"config has no 'architectures' and 'model_type'={model_type!r} is not supported; "
            f"use one of {supported} (model_type {', '.join(by_type)})"
        )
    return by_type[model_type]


def _rope(hf: Mapping[str, Any]) -> tuple[float, tuple[float, float, float, int] | None]:
    """(rope_theta, llama3 scaling or None) from either layout.

    transformers 4: top-level ``rope_theta`` and ``rope_scaling`` (None or a dict with
    ``rope_type`` or the older ``type``); transformers 5: ``rope_parameters`` holding both.
    As in transformers, a legacy ``rope_scaling`` takes precedence over ``rope_parameters``.
    """
    key = "rope_scaling" if hf.get("rope_scaling") else "rope_parameters"
    params = hf.get(key) or {}
    if not isinstance(params, Mapping) or any(isinstance(v, Mapping) for v in params.values()):
        raise ValueError(f"config {key!r}={params!r}: expected one flat dict of rope settings")
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10_000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if float(params.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError(
            f"config {key!r} partial_rotary_factor={params['partial_rotary_factor']!r}: only "
            "full rotary embeddings (1.0) are supported"
        )
    if rope_type == "default":
        return theta, None
    if rope_type != "llama3":
        raise ValueError(
            f"config {key!r} rope_type={rope_type!r} is not supported; supported: 'default', "
            "'llama3'"
        )
    names = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"config {key!r} (rope_type 'llama3') lacks {missing}")
    return theta, (
        float(params["factor"]),
        float(params["low_freq_factor"]),
        float(params["high_freq_factor"]),
        int(params["original_max_position_embeddings"]),
    )


def _checkpoint_dtype(hf: Mapping[str, Any]) -> Any:
    name = hf.get("dtype", hf.get("torch_dtype"))
    if name is None:
        return jnp.float32
    if name not in _DTYPE_NAMES:
        raise ValueError(f"config 'dtype'={name!r}: supported {sorted(_DTYPE_NAMES)}")
    return _DTYPE_NAMES[name]


def config_from_hf(hf_config: Mapping[str, Any], **overrides: Any) -> TransformerConfig:
    """TransformerConfig of a Hugging Face config.json dict (either transformers layout).

    The compute ``dtype`` defaults to the checkpoint's (``dtype`` / ``torch_dtype``; float32 if
    absent), ``param_dtype`` to float32. ``overrides`` may set only ``NUMERIC_OVERRIDES``; a
    shape field, or a setting the model cannot express (o/mlp biases, sliding windows, other
    activations or RoPE types), is a ValueError naming the key.
    """
    hf = dict(hf_config)
    arch = _architecture(hf)
    is_llama = arch == "LlamaForCausalLM"
    fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    for key in overrides:
        if key not in fields:
            raise ValueError(f"override {key!r} is not a TransformerConfig field")
        if key not in NUMERIC_OVERRIDES:
            raise ValueError(
                f"override {key!r} would change the checkpoint's shapes or weights; only "
                f"{sorted(NUMERIC_OVERRIDES)} may be overridden"
            )

    def need(key: str) -> Any:
        if hf.get(key) is None:
            raise ValueError(f"config of {arch} lacks the required key {key!r}")
        return hf[key]

    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config 'hidden_act'={hf['hidden_act']!r}: only 'silu' is supported")
    if is_llama and hf.get("mlp_bias"):
        raise ValueError("config 'mlp_bias'=True: MLP biases are not supported")
    if arch != "Qwen2ForCausalLM" and hf.get("attention_bias"):
        # Llama / Qwen3 put the bias on q, k, v AND o; our model has no o_proj bias.
        raise ValueError(
            f"config 'attention_bias'=True ({arch}: bias on q/k/v/o projections) is not "
            "supported; only Qwen2's q/k/v bias is"
        )
    if not is_llama and hf.get("use_sliding_window"):
        raise ValueError("config 'use_sliding_window'=True: sliding-window attention unsupported")
    layer_types = set(hf.get("layer_types") or ()) - {"full_attention"}
    if layer_types:
        raise ValueError(f"config 'layer_types' has {sorted(layer_types)}: only full_attention")

    heads = int(need("num_attention_heads"))
    hidden = int(need("hidden_size"))
    # transformers' own defaults, which differ by architecture: Qwen3Config has head_dim=128,
    # the others hidden / heads; max_position_embeddings 2048 (Llama) or 32768 (Qwen).
    head_dim = hf.get("head_dim") or (128 if arch == "Qwen3ForCausalLM" else hidden // heads)
    theta, scaling = _rope(hf)
    kwargs: dict[str, Any] = dict(
        vocab_size=int(need("vocab_size")),
        num_layers=int(need("num_hidden_layers")),
        embed_dim=hidden,
        num_heads=heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(head_dim),
        mlp_dim=int(need("intermediate_size")),
        rope_theta=theta,
        rms_eps=float(hf.get("rms_norm_eps", 1e-6)),
        qk_norm=arch == "Qwen3ForCausalLM",
        qkv_bias=arch == "Qwen2ForCausalLM",
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        dtype=_checkpoint_dtype(hf),
        param_dtype=jnp.float32,
        max_seq_len=int(hf.get("max_position_embeddings", 2048 if is_llama else 32768)),
        rope_scaling=scaling,
    )
    return TransformerConfig(**{**kwargs, **overrides})


def _dtype_name(dtype: Any) -> str:
    for name, d in _DTYPE_NAMES.items():
        if jnp.dtype(d) == jnp.dtype(dtype):
            return name
    raise ValueError(f"dtype {jnp.dtype(dtype)} cannot be saved; supported {sorted(_DTYPE_NAMES)}")


def _default_architecture(config: TransformerConfig) -> str:
    if config.qk_norm:
        return "Qwen3ForCausalLM"
    return "Qwen2ForCausalLM" if config.qkv_bias else "LlamaForCausalLM"


def config_to_hf(
    config: TransformerConfig, *, architecture: str | None = None, dtype: Any = None
) -> dict[str, Any]:
    """config.json dict (transformers 5 layout) of ``config``; inverse of ``config_from_hf``.

    architecture: default from the config (qk_norm -> Qwen3, qkv_bias -> Qwen2, else Llama);
    an explicit one must be able to express the config. dtype: the ``dtype`` key (the saved
    weights' dtype); default ``config.param_dtype``.
    """
    arch = architecture or _default_architecture(config)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"architecture {arch!r}: supported {', '.join(SUPPORTED_ARCHITECTURES)}")
    qk_norm, qkv_bias = arch == "Qwen3ForCausalLM", arch == "Qwen2ForCausalLM"
    if (config.qk_norm, config.qkv_bias) != (qk_norm, qkv_bias):
        raise ValueError(
            f"architecture {arch!r} has qk_norm={qk_norm}, qkv_bias={qkv_bias} but the config "
            f"has qk_norm={config.qk_norm}, qkv_bias={config.qkv_bias}"
        )
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": config.rope_theta}
    scaling = config.rope_scaling
    if scaling is not None:
        factor, low, high, original = scaling
        rope = {
            "rope_type": "llama3",
            "rope_theta": config.rope_theta,
            "factor": factor,
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": original,
        }
    out: dict[str, Any] = {
        "architectures": [arch],
        "model_type": SUPPORTED_ARCHITECTURES[arch],
        "vocab_size": config.vocab_size,
        "num_hidden_layers": config.num_layers,
        "hidden_size": config.embed_dim,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "intermediate_size": config.mlp_dim,
        "hidden_act": "silu",
        "rms_norm_eps": config.rms_eps,
        "tie_word_embeddings": config.tie_embeddings,
        "max_position_embeddings": config.max_seq_len,
        "rope_parameters": rope,
        "dtype": _dtype_name(config.param_dtype if dtype is None else dtype),
    }
    if arch != "Qwen2ForCausalLM":  # Qwen2 has a fixed q/k/v bias and no such key
        out["attention_bias"] = False
    if arch == "LlamaForCausalLM":
        out["mlp_bias"] = False
    else:
        out["use_sliding_window"] = False
    return out


# ----------------------------------------------------------------------------------------------
# safetensors reader
# ----------------------------------------------------------------------------------------------


class SafetensorsFile:
    """One .safetensors file, header parsed and validated, tensors as lazy memmap views.

    ``array(name)`` is an ``np.memmap`` view of the tensor's bytes: nothing is read until it is
    indexed, and then only the pages of the elements indexed.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        size = os.path.getsize(self.path)
        where = f"safetensors file {self.path}"
        if size < 8:
            raise ValueError(f"{where}: {size} bytes, shorter than the 8-byte header length")
        with open(self.path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > size - 8 or n > _MAX_HEADER_BYTES:
                raise ValueError(f"{where}: header length {n} exceeds the file ({size} bytes)")
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{where}: header is not valid UTF-8 JSON ({e})") from None
        if not isinstance(header, dict):
            raise ValueError(f"{where}: header is not a JSON object")
        self.metadata = header.pop("__metadata__", None) or {}
        self._data_start = 8 + n
        data_len = size - self._data_start
        self._info: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            self._info[name] = self._check_entry(where, name, info, data_len)
        spans = sorted((b, e, name) for name, (_, _, b, e) in self._info.items() if e > b)
        for (_, end0, name0), (begin1, _, name1) in itertools.pairwise(spans):
            if begin1 < end0:
                raise ValueError(f"{where}: tensors {name0!r} and {name1!r} overlap")
        # The whole file is mapped once; pages are read only when a view is indexed.
        self._mm = np.memmap(self.path, np.uint8, mode="r") if size else None

    @staticmethod
    def _check_entry(where: str, name: str, info: Any, data_len: int):
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise ValueError(f"{where}: tensor {name!r} lacks dtype / shape / data_offsets")
        dt, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dt not in _ST_DTYPES:
            raise ValueError(
                f"{where}: tensor {name!r} has dtype {dt!r}; supported {sorted(_ST_DTYPES)}"
            )
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ValueError(f"{where}: tensor {name!r} has an invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise ValueError(f"{where}: tensor {name!r} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        if end > data_len:
            raise ValueError(
                f"{where}: tensor {name!r} data_offsets {offsets} run past the end of the data "
                f"({data_len} bytes)"
            )
        dtype = _ST_DTYPES[dt]
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise ValueError(
                f"{where}: tensor {name!r} spans {end - begin} bytes but shape {shape} of {dt} "
                f"needs {math.prod(shape) * dtype.itemsize}"
            )
        return dtype, tuple(shape), begin, end

    @property
    def names(self) -> list[str]:
        return list(self._info)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._info[name][1]

    def dtype(self, name: str) -> np.dtype:
        return self._info[name][0]

    def array(self, name: str) -> np.ndarray:
        """Lazy view [shape] of the tensor (reads happen on indexing)."""
        dtype, shape, begin, end = self._info[name]
        start = self._data_start + begin
        if self._mm is None or end == begin:
            return np.zeros(shape, dtype)
        return self._mm[start : self._data_start + end].view(dtype).reshape(shape)


def open_checkpoint(path: str | os.PathLike) -> dict[str, SafetensorsFile]:
    """tensor name -> the SafetensorsFile holding it, for ``model.safetensors`` or the shards
    listed by ``model.safetensors.index.json``; the index and the shards must agree."""
    path = os.fspath(path)
    index_file = os.path.join(path, INDEX_FILE)
    if os.path.isfile(index_file):
        with open(index_file) as f:
            try:
                weight_map = json.load(f).get("weight_map")
            except (json.JSONDecodeError, AttributeError) as e:
                raise ValueError(f"{index_file}: not a JSON object with weight_map ({e})") from None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index_file}: 'weight_map' must be a non-empty object")
        files: dict[str, SafetensorsFile] = {}
        for shard in sorted(set(weight_map.values())):
            # A plain file name: an index must not point outside the checkpoint directory.
            if not isinstance(shard, str) or shard in ("", ".", "..") or "/" in shard:
                raise ValueError(f"{index_file}: shard {shard!r} is not a file name in {path}")
            if not os.path.isfile(os.path.join(path, shard)):
                raise ValueError(f"{index_file}: shard {shard!r} not found in {path}")
            files[shard] = SafetensorsFile(os.path.join(path, shard))
        out: dict[str, SafetensorsFile] = {}
        for shard, st in files.items():
            for name in st.names:
                if weight_map.get(name) != shard:
                    raise ValueError(
                        f"{st.path}: tensor {name!r} is mapped to {weight_map.get(name)!r} by "
                        f"{index_file}"
                    )
                out[name] = st
        absent = sorted(set(weight_map) - set(out))
        if absent:
            raise ValueError(f"{index_file}: tensors {absent[:5]} not in their shard files")
        return out
    single = os.path.join(path, SINGLE_FILE)
    if os.path.isfile(single):
        st = SafetensorsFile(single)
        return dict.fromkeys(st.names, st)
    raise ValueError(f"{path}: neither {SINGLE_FILE} nor {INDEX_FILE} found")


# ----------------------------------------------------------------------------------------------
# The one name / layout table
# ----------------------------------------------------------------------------------------------


def _same(x, c: TransformerConfig):
    return x


def _transpose(x, c: TransformerConfig):
    """[out, in] (torch Linear weight) <-> [in, out] (our kernel)."""
    return x.T


def _heads_in(heads: str) -> tuple[Callable, Callable]:
    """q/k/v weight [N*D, E] -> kernel [E, N, D] = w.reshape(N, D, E).transpose(2, 0, 1),
    N = config.<heads>; and back. Reshape-then-transpose keeps a memmap a view."""

    def to_ours(w, c):
        return w.reshape(getattr(c, heads), c.head_dim, c.embed_dim).transpose(2, 0, 1)

    def to_hf(k, c):
        return k.transpose(1, 2, 0).reshape(getattr(c, heads) * c.head_dim, c.embed_dim)

    return to_ours, to_hf


def _heads_bias(heads: str) -> tuple[Callable, Callable]:
    """q/k/v bias [N*D] <-> [N, D]."""

    def to_ours(b, c):
        return b.reshape(getattr(c, heads), c.head_dim)

    def to_hf(b, c):
        return b.reshape(getattr(c, heads) * c.head_dim)

    return to_ours, to_hf


def _o_to_ours(w, c):
    """o weight [E, H*D] -> kernel [H, D, E] = w.reshape(E, H, D).transpose(1, 2, 0)."""
    return w.reshape(c.embed_dim, c.num_heads, c.head_dim).transpose(1, 2, 0)


def _o_to_hf(k, c):
    return k.transpose(2, 0, 1).reshape(c.embed_dim, c.num_heads * c.head_dim)


@dataclasses.dataclass(frozen=True)
class WeightEntry:
    """One HF tensor <-> one of our parameters.

    hf: the HF name; ``{i}`` marks a per-layer tensor (layer i). ours: our path (inside a Block
    for per-layer entries). to_ours(hf_array, config) / to_hf(our_array, config): the layout
    change; both use only view operations (.T, reshape, transpose), so a memmap stays lazy.
    when: whether the config has this parameter.
    """

    hf: str
    ours: tuple[str, ...]
    to_ours: Callable[[Any, TransformerConfig], Any]
    to_hf: Callable[[Any, TransformerConfig], Any]
    when: Callable[[TransformerConfig], bool] = lambda c: True

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf


def _layer(hf: str, ours: tuple[str, ...], fns=(_same, _same), when=lambda c: True):
    return WeightEntry(f"model.layers.{{i}}.{hf}", ours, *fns, when=when)


WEIGHT_TABLE: tuple[WeightEntry, ...] = (
    WeightEntry("model.embed_tokens.weight", ("embed_tokens", "embedding"), _same, _same),
    _layer("input_layernorm.weight", ("input_layernorm", "scale")),
    _layer("self_attn.q_proj.weight", ("self_attn", "q_proj", "kernel"), _heads_in("num_heads")),
    _layer(
        "self_attn.q_proj.bias",
        ("self_attn", "q_proj", "bias"),
        _heads_bias("num_heads"),
        lambda c: c.qkv_bias,
    ),
    *(
        entry
        for p in ("k", "v")
        for entry in (
            _layer(
                f"self_attn.{p}_proj.weight",
                ("self_attn", f"{p}_proj", "kernel"),
                _heads_in("num_kv_heads"),
            ),
            _layer(
                f"self_attn.{p}_proj.bias",
                ("self_attn", f"{p}_proj", "bias"),
                _heads_bias("num_kv_heads"),
                lambda c: c.qkv_bias,
            ),
        )
    ),
    _layer("self_attn.o_proj.weight", ("self_attn", "o_proj", "kernel"), (_o_to_ours, _o_to_hf)),
    _layer("self_attn.q_norm.weight", ("self_attn", "q_norm", "scale"), when=lambda c: c.qk_norm),
    _layer("self_attn.k_norm.weight", ("self_attn", "k_norm", "scale"), when=lambda c: c.qk_norm),
    _layer("post_attention_layernorm.weight", ("post_attention_layernorm", "scale")),
    *(
        _layer(f"mlp.{p}.weight", ("mlp", p, "kernel"), (_transpose, _transpose))
        for p in ("gate_proj", "up_proj", "down_proj")
    ),
    WeightEntry("model.norm.weight", ("norm", "scale"), _same, _same),
    WeightEntry(
        "lm_head.weight",
        ("lm_head", "kernel"),
        _transpose,
        _transpose,
        when=lambda c: not c.tie_embeddings,
    ),
)


@dataclasses.dataclass(frozen=True)
class _Leaf:
    """One of our parameters and the HF tensors it is made of (one, or one per layer when the
    layers are stacked under ``scan_layers``)."""

    path: tuple[Any, ...]
    entry: WeightEntry
    hf_names: tuple[str, ...]
    stacked: bool


def _plan(config: TransformerConfig) -> list[_Leaf]:
    """Our parameters in WEIGHT_TABLE order, the per-layer ones layer by layer (layer 0's
    tensors, then layer 1's, ...) so that shards hold whole layers."""
    stacked = config.scan_layers
    entries = [e for e in WEIGHT_TABLE if e.when(config)]
    per_layer = [e for e in entries if e.per_layer]
    layers = range(config.num_layers)
    if stacked:
        body = [
            _Leaf(("layers", *e.ours), e, tuple(e.hf.format(i=i) for i in layers), True)
            for e in per_layer
        ]
    else:
        body = [
            _Leaf(("layers", i, *e.ours), e, (e.hf.format(i=i),), False)
            for i in layers
            for e in per_layer
        ]
    plan: list[_Leaf] = []
    for e in entries:
        if not e.per_layer:
            plan.append(_Leaf(e.ours, e, (e.hf,), False))
        elif e is per_layer[0]:
            plan.extend(body)
    return plan


def _match_plan(plan: list[_Leaf], paths: set[tuple[Any, ...]]) -> None:
    """The table must cover our parameter tree exactly (catches a model change it misses)."""
    planned = {leaf.path for leaf in plan}
    if planned != paths:
        raise ValueError(
            f"WEIGHT_TABLE and the model's parameters disagree: no table entry for "
            f"{sorted(map(str, paths - planned))}, no parameter for "
            f"{sorted(map(str, planned - paths))}"
        )


def _hf_shape(leaf: _Leaf, our_shape: tuple[int, ...], config: TransformerConfig):
    """Shape of each HF tensor of ``leaf`` (a layer slice of a stacked parameter)."""
    shape = our_shape[1:] if leaf.stacked else our_shape
    sds = jax.ShapeDtypeStruct(shape, jnp.float32)
    return tuple(jax.eval_shape(lambda x: leaf.entry.to_hf(x, config), sds).shape)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _check_tensors(
    tensors: dict[str, SafetensorsFile],
    expected: dict[str, tuple[int, ...]],
    config: TransformerConfig,
    path: str,
) -> None:
    missing = [n for n in expected if n not in tensors]
    if missing:
        raise ValueError(f"{path}: missing tensors {missing}")
    allowed = set(expected) | ({"lm_head.weight"} if config.tie_embeddings else set())
    extra = sorted(n for n in tensors if n not in allowed and not _HARMLESS.search(n))
    if extra:
        raise ValueError(f"{path}: unexpected tensors {extra} (not part of this model)")
    for name, shape in expected.items():
        got = tensors[name].shape(name)
        if got != shape:
            raise ValueError(
                f"{tensors[name].path}: tensor {name!r} has shape {list(got)}, expected "
                f"{list(shape)} from the config"
            )
    if config.tie_embeddings and "lm_head.weight" in tensors:
        _check_tied_head(tensors, path)


def _check_tied_head(tensors: dict[str, SafetensorsFile], path: str) -> None:
    """A tied checkpoint may also store lm_head.weight, but only as a copy of the embedding;
    compared in row blocks of ~64 MiB so host memory stays bounded."""
    emb_name, head_name = "model.embed_tokens.weight", "lm_head.weight"
    emb, head = tensors[emb_name].array(emb_name), tensors[head_name].array(head_name)
    if emb.shape != head.shape:
        raise ValueError(
            f"{path}: tied model but lm_head.weight has shape {list(head.shape)}, the embedding "
            f"{list(emb.shape)}"
        )
    rows = max(1, (64 * 2**20) // max(1, emb.shape[1] * 4))
    for r in range(0, emb.shape[0], rows):
        a = np.asarray(emb[r : r + rows], np.float32)
        b = np.asarray(head[r : r + rows], np.float32)
        if not np.array_equal(a, b):
            raise ValueError(
                f"{path}: tie_word_embeddings=True but lm_head.weight differs from "
                "model.embed_tokens.weight"
            )


def _slice_sizes(shape: tuple[int, ...], index: tuple[slice, ...]) -> tuple[int, ...]:
    return tuple(len(range(n)[s]) for n, s in zip(shape, index, strict=True))


def _leaf_callback(leaf, tensors, config, shape, dtype) -> Callable:
    """cb(index) -> the index's slice of the parameter, read from the memmaps, cast to dtype."""

    def read(name: str, index: tuple[slice, ...], out: np.ndarray) -> None:
        # One copy, straight from the mapped pages into memory we own (never an alias of the
        # file, which a later save to the same directory may replace).
        out[...] = leaf.entry.to_ours(tensors[name].array(name), config)[index]

    def cb(index):
        index = tuple(slice(None) for _ in shape) if index is None else tuple(index)
        out = np.empty(_slice_sizes(shape, index), dtype)
        if not leaf.stacked:
            read(leaf.hf_names[0], index, out)
            return out
        for j, i in enumerate(range(len(leaf.hf_names))[index[0]]):
            read(leaf.hf_names[i], index[1:], out[j])
        return out

    return cb


def load_hf_state(
    path: str | os.PathLike,
    config: TransformerConfig,
    mesh: jax.sharding.Mesh,
    rules: sh.LogicalRules = sh.DEFAULT_RULES,
) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, state) of ``Transformer(config)`` with the checkpoint's weights, every leaf
    already on its NamedSharding from ``abstract_sharded_state(Transformer, config, mesh,
    rules)`` and stored in ``config.param_dtype``.

    All names and shapes are checked before any tensor is read; each device's slice is then
    read lazily from the memmapped files.
    """
    path = os.fspath(path)
    tensors = open_checkpoint(path)
    graphdef, abstract, _ = sh.abstract_sharded_state(Transformer, config, mesh, rules)
    variables = dict(nnx.to_flat_state(abstract))
    plan = _plan(config)
    _match_plan(plan, set(variables))
    expected = {}
    for leaf in plan:
        hf_shape = _hf_shape(leaf, variables[leaf.path].shape, config)
        expected.update(dict.fromkeys(leaf.hf_names, hf_shape))
    _check_tensors(tensors, expected, config, path)

    loaded = []
    for leaf in plan:
        var = variables[leaf.path]
        sds = var.get_value()
        cb = _leaf_callback(leaf, tensors, config, sds.shape, sds.dtype)
        array = jax.make_array_from_callback(sds.shape, sds.sharding, cb, dtype=sds.dtype)
        loaded.append((leaf.path, var.replace(array)))
    return graphdef, nnx.from_flat_state(loaded)


def load_hf_model(
    path: str | os.PathLike,
    *,
    dtype: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    rules: sh.LogicalRules | None = None,
    **overrides: Any,
) -> Transformer:
    """A ``Transformer`` with a Hugging Face checkpoint's weights (``.config`` is its config).

    dtype: compute dtype (None: the checkpoint's, float32 if config.json names none).
    Parameters are stored in float32 unless ``param_dtype=`` is overridden (bfloat16 for
    inference-only use). mesh: default one device (``jax.devices()[0]``); rules: default
    ``DEFAULT_RULES``. ``overrides``: other ``NUMERIC_OVERRIDES`` (scan_layers, remat, ...).
    """
    if dtype is not None:
        overrides["dtype"] = dtype
    config = config_from_hf(read_hf_config(path), **overrides)
    if mesh is None:
        mesh = sh.make_mesh((1,) * len(sh.DEFAULT_MESH_AXES), devices=jax.devices()[:1])
    rules = sh.DEFAULT_RULES if rules is None else rules
    return nnx.merge(*load_hf_state(path, config, mesh, rules))


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _OutTensor:
    name: str
    shape: tuple[int, ...]
    read: Callable[[], np.ndarray]  # the HF-layout array, fetched when written

    def nbytes(self, dtype: np.dtype) -> int:
        return math.prod(self.shape) * dtype.itemsize


def _write_safetensors(file: str, tensors: list[_OutTensor], st_dtype: str) -> None:
    """One safetensors file: header (8-byte-aligned, space padded as the spec allows), then the
    tensors back to back in header order, each fetched and written one at a time."""
    dtype = _ST_DTYPES[st_dtype]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        end = offset + t.nbytes(dtype)
        header[t.name] = {"dtype": st_dtype, "shape": list(t.shape), "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(file, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for t in tensors:
            arr = np.ascontiguousarray(t.read(), dtype=dtype)
            if arr.shape != t.shape:
                raise ValueError(f"{t.name}: produced shape {arr.shape}, planned {t.shape}")
            f.write(arr.reshape(-1).view(np.uint8).data)


def _shards(tensors: list[_OutTensor], dtype: np.dtype, max_bytes: int | None):
    """Consecutive groups of at most max_bytes each (a bigger tensor gets its own shard)."""
    if max_bytes is None:
        return [tensors]
    groups: list[list[_OutTensor]] = [[]]
    size = 0
    for t in tensors:
        if groups[-1] and size + t.nbytes(dtype) > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += t.nbytes(dtype)
    return groups


def save_hf_model(
    model: Transformer,
    path: str | os.PathLike,
    *,
    max_shard_bytes: int | None = None,
    dtype: Any = None,
    architecture: str | None = None,
    hf_config: Mapping[str, Any] | None = None,
    generation_config: Mapping[str, Any] | None = None,
) -> None:
    """Write ``model`` as a Hugging Face checkpoint directory transformers can load.

    Files: model.safetensors (or model-0000k-of-0000n.safetensors + model.safetensors.index.json
    when ``max_shard_bytes`` is set and exceeded), config.json (``config_to_hf``, merged over
    ``hf_config`` so the source's other keys such as bos_token_id survive), and
    generation_config.json (``generation_config``, else the bos/eos/pad ids of ``hf_config``;
    none written if neither has any). dtype: of the saved weights (float32 / bfloat16 /
    float16; default the model's param_dtype). Existing weight files in ``path`` are replaced.
    Tensors are gathered one at a time with ``jax.device_get`` (one process only).
    """
    config = model.config
    if max_shard_bytes is not None and max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    out_config = config_to_hf(config, architecture=architecture, dtype=dtype)
    st_dtype = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[out_config["dtype"]]
    variables = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    plan = _plan(config)
    _match_plan(plan, set(variables))

    tensors: list[_OutTensor] = []
    for leaf in plan:
        value = variables[leaf.path].get_value()
        hf_shape = _hf_shape(leaf, value.shape, config)
        for i, name in enumerate(leaf.hf_names):

            def read(value=value, i=i, leaf=leaf):
                ours = value[i] if leaf.stacked else value
                return leaf.entry.to_hf(np.asarray(jax.device_get(ours)), config)

            tensors.append(_OutTensor(name, hf_shape, read))

    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    for old in os.listdir(path):
        if old in (SINGLE_FILE, INDEX_FILE) or re.fullmatch(
            r"model-\d{5}-of-\d{5}\.safetensors", old
        ):
            os.remove(os.path.join(path, old))
    groups = _shards(tensors, _ST_DTYPES[st_dtype], max_shard_bytes)
    if len(groups) == 1:
        _write_safetensors(os.path.join(path, SINGLE_FILE), groups[0], st_dtype)
    else:
        weight_map = {}
        for k, group in enumerate(groups, 1):
            shard = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
            _write_safetensors(os.path.join(path, shard), group, st_dtype)
            weight_map.update(dict.fromkeys((t.name for t in group), shard))
        total = sum(t.nbytes(_ST_DTYPES[st_dtype]) for t in tensors)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        _write_json(os.path.join(path, INDEX_FILE), index)

    source = dict(hf_config or {})
    # Keys ours re-expresses in the transformers 5 layout, or derives (layer_types).
    for key in ("rope_theta", "rope_scaling", "torch_dtype", "layer_types"):
        source.pop(key, None)
    _write_json(os.path.join(path, "config.json"), {**source, **out_config})
    gen = dict(generation_config or {})
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key not in gen and source.get(key) is not None:
            gen[key] = source[key]
    if gen:
        _write_json(os.path.join(path, "generation_config.json"), gen)


def _write_json(file: str, obj: Any) -> None:
    with open(file, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def copy_tokenizer_files(src_dir: str | os.PathLike, dst_dir: str | os.PathLike) -> list[str]:
    """Copy the tokenizer / chat-template / generation files of ``TOKENIZER_FILES`` that exist
    in ``src_dir`` to ``dst_dir`` (so an exported checkpoint is servable); returns their names."""
    os.makedirs(dst_dir, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        src = os.path.join(src_dir, name)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(dst_dir, name))
            copied.append(name)
    return copied
