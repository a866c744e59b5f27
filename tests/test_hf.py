"""Hugging Face checkpoints in and out, against transformers (CPU torch) as the reference.

Tiny random checkpoints (every weight randomised, norms around 1) are written with
``save_pretrained``; our loads must give transformers' logits, our saves must load back into
transformers, and bad checkpoints must fail with errors naming the culprit.
"""

import dataclasses
import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.torch
import torch
import transformers
from flax import nnx

from insight_jax import sharding as shd
from insight_jax.models import hf
from insight_jax.models.transformer import TransformerConfig, init_cache

VOCAB = 256
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-6,
    bos_token_id=1,
    eos_token_id=2,
)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
KINDS = {
    "qwen3_tied": (
        transformers.Qwen3Config,
        transformers.Qwen3ForCausalLM,
        dict(head_dim=16, tie_word_embeddings=True, rope_theta=1e6),
    ),
    # head_dim 24 != hidden / heads = 16: q is 96 wide, o maps 96 -> 64.
    "qwen3_untied": (
        transformers.Qwen3Config,
        transformers.Qwen3ForCausalLM,
        dict(head_dim=24, tie_word_embeddings=False),
    ),
    "qwen2": (
        transformers.Qwen2Config,
        transformers.Qwen2ForCausalLM,
        dict(tie_word_embeddings=True, rope_theta=1e6),
    ),
    "llama3": (
        transformers.LlamaConfig,
        transformers.LlamaForCausalLM,
        dict(tie_word_embeddings=False, rope_theta=5e5, rope_scaling=LLAMA3_ROPE),
    ),
}
LOADABLE = ["qwen3_tied", "qwen3_untied", "qwen2", "llama3"]


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random: N(0, 0.2) weights and biases, norm scales uniform in 1 +/- 0.3."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * (2 * torch.rand(p.shape, generator=g) - 1))
            else:
                p.normal_(0.0, 0.2, generator=g)


_CACHE: dict = {}


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory):
    return tmp_path_factory.mktemp("hf")


def checkpoint(root, kind: str, torch_dtype=torch.float32) -> str:
    """Directory of a saved random checkpoint (built once per module)."""
    key = (kind, torch_dtype)
    if key not in _CACHE:
        cfg_cls, model_cls, extra = KINDS[kind]
        torch.manual_seed(0)
        model = model_cls(cfg_cls(**COMMON, **extra))
        # The seed depends on the checkpoint only, not on which test asked first (xdist order).
        _randomise(model, seed=1 + list(KINDS).index(kind))
        path = os.path.join(root, f"{kind}_{str(torch_dtype).split('.')[-1]}")
        model.to(torch_dtype).save_pretrained(path)
        _CACHE[key] = path
    return _CACHE[key]


def reference(path: str) -> torch.nn.Module:
    return transformers.AutoModelForCausalLM.from_pretrained(
        path, attn_implementation="eager", dtype=torch.float32
    ).eval()


def hf_logits(model, tokens, mask):
    """transformers logits with our positions convention: position = real tokens before."""
    mask = np.asarray(mask, np.int64)
    pos = np.maximum(np.cumsum(mask, -1) - 1, 0)
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(np.asarray(tokens, np.int64)),
            attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(pos),
        )
    return out.logits.float().numpy()


@nnx.jit
def fwd(model, tokens, mask):
    return model(tokens, attention_mask=mask)[0]


def batch(seed: int, lengths=(24, 17, 9), side="right"):
    """Random tokens [B, T] and mask, rows padded on ``side`` to T = max(lengths)."""
    rng = np.random.default_rng(seed)
    t = max(lengths)
    tokens = rng.integers(3, VOCAB, (len(lengths), t)).astype(np.int32)
    mask = np.zeros((len(lengths), t), bool)
    for b, n in enumerate(lengths):
        if side == "right":
            mask[b, :n] = True
        else:
            mask[b, t - n :] = True
    return tokens, mask


def load(path, **kw):
    return hf.load_hf_model(path, dtype=jnp.float32, **kw)


# ----------------------------------------------------------------------------------------------
# Logits against transformers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kind", LOADABLE)
def test_logits_match_transformers(ckpt_root, kind, side):
    path = checkpoint(ckpt_root, kind)
    model = load(path)
    tokens, mask = batch(1, side=side)  # 24 tokens: past llama3's original context of 16
    want = hf_logits(reference(path), tokens, mask)
    got = np.asarray(fwd(model, tokens, mask))
    assert got.shape == want.shape
    err = np.abs(got - want)[mask].max()
    scale = np.abs(want[mask]).max()
    assert err < 1e-4, (err, scale)
    if kind == "llama3":
        # The scaling changes the model: without it the logits are far off.
        plain = dataclasses.replace(model.config, rope_scaling=None)
        unscaled = nnx.merge(*hf.load_hf_state(path, plain, _one_device_mesh()))
        assert np.abs(np.asarray(fwd(unscaled, tokens, mask)) - want)[mask].max() > 1e-2


def _one_device_mesh():
    return shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])


def test_loaded_config(ckpt_root):
    model = load(checkpoint(ckpt_root, "qwen3_untied"))
    want = TransformerConfig(
        vocab_size=VOCAB,
        num_layers=2,
        embed_dim=64,
        num_heads=4,
        num_kv_heads=2,
        head_dim=24,
        mlp_dim=128,
        rope_theta=10_000.0,
        rms_eps=1e-6,
        qk_norm=True,
        qkv_bias=False,
        tie_embeddings=False,
        max_seq_len=64,
    )
    assert model.config == want


def test_kv_cache_decode_matches_full_forward(ckpt_root):
    model = load(checkpoint(ckpt_root, "qwen3_untied"))
    tokens, mask = batch(2, lengths=(14, 9), side="left")
    prompt, new = 10, tokens.shape[1] - 10
    mask[:, prompt:] = True  # decoded tokens are all real
    full = np.asarray(fwd(model, tokens, mask))

    @nnx.jit
    def step(model, tok, m, cache):
        return model(tok, attention_mask=m, cache=cache)

    cache = init_cache(model.config, tokens.shape[0], tokens.shape[1])
    logits, cache = step(model, tokens[:, :prompt], mask[:, :prompt], cache)
    got = [np.asarray(logits)]
    for j in range(prompt, prompt + new):
        logits, cache = step(model, tokens[:, j : j + 1], mask[:, j : j + 1], cache)
        got.append(np.asarray(logits))
    got = np.concatenate(got, axis=1)
    assert np.abs(got - full)[mask].max() < 1e-5


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LOADABLE)
def test_save_loads_in_transformers(ckpt_root, tmp_path, kind):
    src = checkpoint(ckpt_root, kind)
    source_cfg = hf.read_hf_config(src)
    model = load(src)
    hf.save_hf_model(model, tmp_path, hf_config=source_cfg)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == source_cfg["architectures"]
    assert "rope_parameters" in cfg and "rope_theta" not in cfg and cfg["dtype"] == "float32"
    assert cfg["bos_token_id"] == 1 and cfg["eos_token_id"] == 2  # source keys survive
    gen = json.loads((tmp_path / "generation_config.json").read_text())
    assert gen["bos_token_id"] == 1 and gen["eos_token_id"] == 2
    tokens, mask = batch(3, side="left")
    want = hf_logits(reference(src), tokens, mask)
    got = hf_logits(reference(str(tmp_path)), tokens, mask)
    assert np.abs(got - want)[mask].max() < 1e-5
    # and our own reader gives back the same config
    assert hf.config_from_hf(cfg, dtype=jnp.float32) == model.config


def test_sharded_save(ckpt_root, tmp_path):
    src = checkpoint(ckpt_root, "qwen3_untied")
    model = load(src)
    hf.save_hf_model(model, tmp_path, max_shard_bytes=64 * 1024)
    index = json.loads((tmp_path / hf.INDEX_FILE).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (tmp_path / hf.SINGLE_FILE).exists()
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == shards
    sizes = [os.path.getsize(tmp_path / s) for s in shards]
    assert index["metadata"]["total_size"] < sum(sizes)  # data plus one header per file
    tokens, mask = batch(4)
    want = hf_logits(reference(src), tokens, mask)
    assert np.abs(hf_logits(reference(str(tmp_path)), tokens, mask) - want)[mask].max() < 1e-5
    ours = np.asarray(fwd(load(tmp_path), tokens, mask))
    np.testing.assert_array_equal(ours, np.asarray(fwd(model, tokens, mask)))
    # Saving again unsharded replaces the shards.
    hf.save_hf_model(model, tmp_path)
    assert [p.name for p in tmp_path.glob("*.safetensors")] == [hf.SINGLE_FILE]
    assert not (tmp_path / hf.INDEX_FILE).exists()


@pytest.mark.parametrize("torch_dtype", [torch.bfloat16, torch.float16])
def test_half_precision_checkpoint_exact(ckpt_root, tmp_path, torch_dtype):
    src = checkpoint(ckpt_root, "qwen2", torch_dtype)
    hf_name = str(torch_dtype).split(".")[-1]
    sd = {k: v.float().numpy() for k, v in reference(src).state_dict().items()}
    model = hf.load_hf_model(src)
    assert model.config.dtype == jnp.dtype(hf_name)  # compute dtype from config.json
    assert model.config.param_dtype == jnp.float32
    p = nnx.to_pure_dict(nnx.state(model))
    # Independent spot checks of the layout: kernel = weight.T with heads split out.
    np.testing.assert_array_equal(p["embed_tokens"]["embedding"], sd["model.embed_tokens.weight"])
    q = sd["model.layers.1.self_attn.q_proj.weight"]  # [H*D, E]
    np.testing.assert_array_equal(
        p["layers"][1]["self_attn"]["q_proj"]["kernel"], q.T.reshape(64, 4, 16)
    )
    o = sd["model.layers.0.self_attn.o_proj.weight"]  # [E, H*D]
    np.testing.assert_array_equal(
        p["layers"][0]["self_attn"]["o_proj"]["kernel"], o.T.reshape(4, 16, 64)
    )
    np.testing.assert_array_equal(
        p["layers"][0]["self_attn"]["k_proj"]["bias"],
        sd["model.layers.0.self_attn.k_proj.bias"].reshape(2, 16),
    )
    # bf16 storage keeps the exact values too.
    half = hf.load_hf_model(src, param_dtype=hf_name)
    emb = half.embed_tokens.embedding[...]
    assert emb.dtype == jnp.dtype(hf_name)
    np.testing.assert_array_equal(np.asarray(emb, np.float32), sd["model.embed_tokens.weight"])
    # Every tensor survives our save in the checkpoint's dtype bit for bit (read back by the
    # safetensors library).
    hf.save_hf_model(model, tmp_path, dtype=hf_name)
    back = safetensors.torch.load_file(str(tmp_path / hf.SINGLE_FILE))
    assert set(back) == set(sd) - {"lm_head.weight"}  # tied: no head tensor
    for name, t in back.items():
        assert t.dtype == torch_dtype, name
        np.testing.assert_array_equal(t.float().numpy(), sd[name], err_msg=name)


def test_scan_layers_load_and_save(ckpt_root, tmp_path):
    src = checkpoint(ckpt_root, "qwen3_untied")
    flat, scanned = load(src), load(src, scan_layers=True)
    kernel = scanned.layers.self_attn.q_proj.kernel[...]
    assert kernel.shape == (2, 64, 4, 24)
    tokens, mask = batch(5)
    a, b = np.asarray(fwd(flat, tokens, mask)), np.asarray(fwd(scanned, tokens, mask))
    assert np.abs(a - b)[mask].max() < 1e-5
    hf.save_hf_model(scanned, tmp_path)
    want = safetensors.torch.load_file(os.path.join(src, hf.SINGLE_FILE))
    got = safetensors.torch.load_file(str(tmp_path / hf.SINGLE_FILE))
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, msg=name)


def test_sharded_placement(ckpt_root, devices):
    src = checkpoint(ckpt_root, "qwen3_untied")
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    cfg = hf.config_from_hf(hf.read_hf_config(src), dtype=jnp.float32)
    graphdef, state = hf.load_hf_state(src, cfg, mesh, shd.DEFAULT_RULES)
    _, _, shardings = shd.abstract_sharded_state(type(load(src)), cfg, mesh, shd.DEFAULT_RULES)
    got = dict(nnx.to_flat_state(state))
    want = dict(nnx.to_flat_state(shardings))
    assert set(got) == set(want)
    split = 0
    for path, var in got.items():
        assert var[...].sharding == want[path].get_value(), path
        split += var[...].sharding.spec != jax.sharding.PartitionSpec(*[None] * var.ndim)
    assert split > 10  # the mesh really splits the parameters
    single = load(src)
    values = dict(nnx.to_flat_state(nnx.state(single)))
    for path, var in got.items():  # each device got its own slice of the right tensor
        np.testing.assert_array_equal(np.asarray(var[...]), np.asarray(values[path][...]))
    tokens, mask = batch(6, lengths=(24, 17, 9, 20))
    sharded = np.asarray(fwd(nnx.merge(graphdef, state), tokens, mask))
    # Same weights; only the float32 reduction order across devices differs.
    assert np.abs(sharded - np.asarray(fwd(single, tokens, mask)))[mask].max() < 1e-4


# ----------------------------------------------------------------------------------------------
# config.json layouts
# ----------------------------------------------------------------------------------------------


def _v4_config(model_type: str, rope_scaling=None) -> dict:
    arch = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}
    return {
        "architectures": [arch[model_type]],
        "model_type": model_type,
        "vocab_size": 1000,
        "hidden_size": 96,
        "intermediate_size": 200,
        "num_hidden_layers": 3,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


def _v5_from_v4(v4: dict) -> dict:
    """The same config in the transformers 5 layout, by the documented key names."""
    v5 = {k: v for k, v in v4.items() if k not in ("rope_theta", "rope_scaling", "torch_dtype")}
    scaling = dict(v4["rope_scaling"] or {})
    rope_type = scaling.pop("rope_type", scaling.pop("type", "default"))
    v5["rope_parameters"] = {"rope_type": rope_type, "rope_theta": v4["rope_theta"], **scaling}
    v5["dtype"] = v4["torch_dtype"]
    return v5


@pytest.mark.parametrize(
    "model_type,rope_scaling",
    [
        ("qwen2", None),
        ("qwen3", None),
        ("llama", LLAMA3_ROPE),
        # transformers 4.3x spelling of the scaling type
        ("llama", {**{k: v for k, v in LLAMA3_ROPE.items() if k != "rope_type"}, "type": "llama3"}),
    ],
)
def test_config_layouts_agree(model_type, rope_scaling):
    v4 = _v4_config(model_type, rope_scaling)
    v5 = _v5_from_v4(v4)
    a, b = hf.config_from_hf(v4), hf.config_from_hf(v5)
    assert a == b
    assert (a.num_layers, a.embed_dim, a.num_heads, a.num_kv_heads) == (3, 96, 6, 2)
    assert a.head_dim == 16 if model_type != "qwen3" else a.head_dim == 128  # HF defaults
    assert (a.rope_theta, a.rms_eps, a.max_seq_len) == (500000.0, 1e-5, 4096)
    assert a.qk_norm == (model_type == "qwen3") and a.qkv_bias == (model_type == "qwen2")
    assert a.dtype == jnp.bfloat16 and a.param_dtype == jnp.float32
    if rope_scaling is not None:
        assert a.rope_scaling == (8.0, 1.0, 4.0, 16)
    # transformers' own conversion of the old layout parses to the same config too
    cls = {"qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config}.get(
        model_type, transformers.LlamaConfig
    )
    converted = cls(**{k: v for k, v in v4.items() if k not in ("architectures", "model_type")})
    as_dict = {**converted.to_dict(), "architectures": v4["architectures"]}
    assert hf.config_from_hf(as_dict) == a


def test_config_to_hf_roundtrip_and_overrides():
    for cfg in [
        TransformerConfig.tiny(300),
        TransformerConfig.tiny(300, qk_norm=False, qkv_bias=True, tie_embeddings=True),
        TransformerConfig.tiny(300, qk_norm=False, rope_theta=5e5),
    ]:
        out = hf.config_to_hf(cfg)
        assert hf.config_from_hf(out, dtype=cfg.dtype) == cfg
    assert hf.config_to_hf(TransformerConfig.tiny(300))["architectures"] == ["Qwen3ForCausalLM"]
    with pytest.raises(ValueError, match="qk_norm"):
        hf.config_to_hf(TransformerConfig.tiny(300), architecture="LlamaForCausalLM")
    v5 = _v5_from_v4(_v4_config("qwen2"))
    cfg = hf.config_from_hf(v5, dtype="float32", param_dtype="bfloat16", max_seq_len=128)
    assert (cfg.dtype, cfg.param_dtype, cfg.max_seq_len) == (jnp.float32, jnp.bfloat16, 128)
    with pytest.raises(ValueError, match="num_layers"):
        hf.config_from_hf(v5, num_layers=2)
    with pytest.raises(ValueError, match="no_such_field"):
        hf.config_from_hf(v5, no_such_field=1)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,match",
    [
        ({"architectures": ["MistralForCausalLM"]}, "MistralForCausalLM"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
        ({"attention_bias": True, "model_type": "llama"}, "attention_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"use_sliding_window": True}, "use_sliding_window"),
        ({"vocab_size": None}, "vocab_size"),
        ({"model_type": "llama"}, "model_type"),
    ],
)
def test_config_errors(change, match):
    cfg = {**_v4_config("qwen2"), **change}
    if change.get("model_type") == "llama" and "attention_bias" in change:
        cfg["architectures"] = ["LlamaForCausalLM"]
    with pytest.raises(ValueError, match=match):
        hf.config_from_hf(cfg)


def _edit_checkpoint(src, dst, edit):
    """Copy of checkpoint ``src`` whose tensors dict went through ``edit`` (safetensors lib)."""
    shutil.copytree(src, dst)
    file = os.path.join(dst, hf.SINGLE_FILE)
    tensors = safetensors.torch.load_file(file)
    edit(tensors)
    safetensors.torch.save_file(tensors, file, metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize(
    "kind,edit,match",
    [
        (
            "qwen3_untied",
            lambda t: t.pop("model.layers.1.mlp.up_proj.weight"),
            "model.layers.1.mlp.up_proj.weight",
        ),
        ("qwen3_untied", lambda t: t.pop("lm_head.weight"), "lm_head.weight"),
        (
            "qwen3_untied",
            lambda t: t.update({"model.norm.weight": torch.ones(65)}),
            "model.norm.weight",
        ),
        (
            "qwen3_untied",
            lambda t: t.update({"model.layers.2.mlp.up_proj.weight": torch.ones(3)}),
            "model.layers.2.mlp.up_proj.weight",
        ),
        (
            "qwen3_tied",
            lambda t: t.update({"lm_head.weight": torch.zeros(VOCAB, 64)}),
            "lm_head.weight",
        ),
    ],
)
def test_checkpoint_errors(ckpt_root, tmp_path, kind, edit, match):
    path = _edit_checkpoint(checkpoint(ckpt_root, kind), tmp_path / "ck", edit)
    with pytest.raises(ValueError, match=match):
        load(path)


def test_harmless_extras_and_tied_head_copy(ckpt_root, tmp_path):
    def edit(t):
        t["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
        t["lm_head.weight"] = t["model.embed_tokens.weight"].clone()

    src = checkpoint(ckpt_root, "qwen3_tied")
    path = _edit_checkpoint(src, tmp_path / "ck", edit)
    tokens, mask = batch(7)
    a, b = np.asarray(fwd(load(path), tokens, mask)), np.asarray(fwd(load(src), tokens, mask))
    np.testing.assert_array_equal(a, b)


def _raw_safetensors(file, header: dict, data_len: int):
    raw = json.dumps(header).encode()
    with open(file, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        f.write(b"\0" * data_len)


@pytest.mark.parametrize(
    "header,data_len,match",
    [
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 8, "'w'.*past the end"),
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, 16, "'w'.*needs 16"),
        (
            {
                "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F16", "shape": [4], "data_offsets": [8, 16]},
            },
            16,
            "'a' and 'b' overlap",
        ),
        ({"w": {"dtype": "I32", "shape": [4], "data_offsets": [0, 16]}}, 16, "'w'.*'I32'"),
        ({"w": {"dtype": "F32", "shape": [4]}}, 16, "'w'"),
    ],
)
def test_corrupt_header(tmp_path, header, data_len, match):
    file = tmp_path / "x.safetensors"
    _raw_safetensors(file, header, data_len)
    with pytest.raises(ValueError, match=match) as e:
        hf.SafetensorsFile(file)
    assert str(file) in str(e.value)


def test_header_length_beyond_file(tmp_path):
    file = tmp_path / "x.safetensors"
    file.write_bytes((10**6).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="header length"):
        hf.SafetensorsFile(file)


def test_bad_index(ckpt_root, tmp_path):
    src = checkpoint(ckpt_root, "qwen3_untied")
    model = load(src)
    hf.save_hf_model(model, tmp_path, max_shard_bytes=64 * 1024)
    index_file = tmp_path / hf.INDEX_FILE
    index = json.loads(index_file.read_text())
    index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors"
    index_file.write_text(json.dumps(index))
    with pytest.raises(ValueError, match="elsewhere"):
        load(tmp_path)


# ----------------------------------------------------------------------------------------------
# Laziness, tokenizer files
# ----------------------------------------------------------------------------------------------


def test_reader_is_lazy(ckpt_root, tmp_path):
    # A 256 MiB tensor in a sparse file: a slice reads only its pages.
    file = tmp_path / "big.safetensors"
    big = 16384 * 4096 * 4
    header = {
        "big": {"dtype": "F32", "shape": [16384, 4096], "data_offsets": [0, big]},
        "small": {"dtype": "BF16", "shape": [3], "data_offsets": [big, big + 6]},
    }
    raw = json.dumps(header).encode()
    with open(file, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + big)
        f.seek(8 + len(raw) + big)
        f.write(np.array([1.5, -2, 3], ml_dtypes.bfloat16).tobytes())
    st = hf.SafetensorsFile(file)
    view = st.array("big")
    assert isinstance(view, np.memmap) and view.shape == (16384, 4096)
    np.testing.assert_array_equal(view[100:102, :5], np.zeros((2, 5), np.float32))
    np.testing.assert_array_equal(st.array("small").astype(np.float32), [1.5, -2, 3])
    # Every layout change of the table is a view of the file, so a device's callback reads
    # only its slice of the tensor.
    src = checkpoint(ckpt_root, "qwen2")
    cfg = hf.config_from_hf(hf.read_hf_config(src))
    tensors = hf.open_checkpoint(src)
    for entry in hf.WEIGHT_TABLE:
        if entry.when(cfg):
            name = entry.hf.format(i=0)
            arr = tensors[name].array(name)
            assert np.shares_memory(entry.to_ours(arr, cfg), arr), name


def test_copy_tokenizer_files(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for name in ("tokenizer.json", "chat_template.jinja", "generation_config.json", "other.txt"):
        (src / name).write_text(name)
    copied = hf.copy_tokenizer_files(src, dst)
    assert sorted(copied) == ["chat_template.jinja", "generation_config.json", "tokenizer.json"]
    assert sorted(p.name for p in dst.iterdir()) == sorted(copied)
    assert (dst / "tokenizer.json").read_text() == "tokenizer.json"
