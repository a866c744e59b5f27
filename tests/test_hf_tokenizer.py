"""HF tokenizers (tokenizer.json + configs + chat templates) against transformers' own loading.

A tiny byte-level BPE is trained here with the `tokenizers` library and saved as a model folder;
every output of `load_hf_tokenizer` is compared with transformers' PreTrainedTokenizerFast on the
same folder (ids, batches, decode, rendered chat templates, special ids), on seeded random input.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jinja2
import numpy as np
import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from insight_jax.models.tokenizers import (
    CharTokenizer,
    encode_batch,
    format_prompt,
    load_hf_tokenizer,
)
from insight_jax.models.tokenizers import Tokenizer as TokenizerProtocol

transformers = pytest.importorskip("transformers")

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
THINK = ("<think>", "</think>")
LLAMA_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)

# chatml shape: optional system turn, user/assistant turns (an assistant's reasoning before
# </think> is dropped from history), tools listed as JSON, and a generation prompt that can
# carry an empty think block. Uses namespace, loopcontrols, tojson, raise_exception, generation.
QWEN_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
{{- 'Tools:\\n' }}
{%- for tool in tools %}{{- tool | tojson + '\\n' }}{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(turns=0) %}
{%- for message in messages %}
  {%- if message.role == 'system' %}
    {%- if not loop.first %}{{ raise_exception('a system message must come first') }}{% endif %}
    {%- continue %}
  {%- endif %}
  {%- set ns.turns = ns.turns + 1 %}
  {%- if message.role == 'assistant' %}
    {%- set content = message.content %}
    {%- if '</think>' in content %}
      {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
    {%- endif %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if message.tool_calls is defined %}{{- message.tool_calls | tojson }}{%- endif %}
    {%- generation %}{{ content + '<|im_end|>' }}{% endgeneration %}
    {{- '\\n' }}
  {%- else %}
    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
  {{- '<|im_start|>assistant\\n' }}
  {%- if enable_thinking is defined and enable_thinking is false %}
    {{- '<think>\\n\\n</think>\\n\\n' }}
  {%- endif %}
{%- endif %}
"""

# a different template, saved as chat_template.jinja next to a config that has QWEN_TEMPLATE;
# its indented block tags on their own lines render right only with trim_blocks/lstrip_blocks
JINJA_FILE_TEMPLATE = """\
{% for message in messages %}
    {% if message.role == 'system' %}
[SYS] {{ message.content | trim }}
    {% else %}
<|im_start|>{{ message.role | upper }}: {{ message.content | trim }}<|im_end|>
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>ASSISTANT:
{% endif %}
"""

LLAMA_TEMPLATE = """\
{{- bos_token }}
{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}
{{- '<|start_header_id|>system<|end_header_id|>\\n\\nToday Date: ' + date_string }}
{%- if messages[0].role == 'system' %}{{- '\\n\\n' + messages[0].content | trim }}{%- endif %}
{{- '<|eot_id|>' }}
{%- for message in messages %}
  {%- if message.role == 'system' %}{% continue %}{% endif %}
  {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' }}
  {{- message.content | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
  {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

WORDS = [
    "the", "cat", "sat", "on", "mat", "42", "3.14", "x=7", "héllo", "naïve", "日本語", "中文",
    "🙂", "Ωmega", "tab\there", "a  b", "(1+2)*3", "don't", "it's", "<b>", "&amp;", "ß",
]  # fmt: skip


def _sentence(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 12)):
        parts.append(rng.choice(WORDS) if rng.random() < 0.7 else str(rng.randint(0, 10**6)))
        parts.append(rng.choice([" ", " ", " ", "  ", "\n", "\t", "   ", "\n\n", ", ", ". "]))
    return "".join(parts)


def _train_backend(specials: tuple[str, ...], extra: tuple[str, ...] = ()) -> Tokenizer:
    rng = random.Random(0)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([_sentence(rng) for _ in range(400)], trainer)
    # Qwen adds its think tags as non-special added tokens: matched in text, kept by decode
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra])
    return backend


def _added_tokens_decoder(backend: Tokenizer) -> dict:
    return {
        str(i): {"content": t.content, "special": t.special, "lstrip": False, "rstrip": False,
                 "normalized": False, "single_word": False}
        for i, t in backend.get_added_tokens_decoder().items()
    }  # fmt: skip


def _write(folder, backend: Tokenizer, config: dict | None, generation: dict | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    backend.save(str(folder / "tokenizer.json"))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if generation is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation), encoding="utf-8")
    return folder


def _reference(folder):
    return transformers.PreTrainedTokenizerFast.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def qwen_backend():
    return _train_backend(QWEN_SPECIALS, THINK)


@pytest.fixture(scope="module")
def qwen_config(qwen_backend):
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": _added_tokens_decoder(qwen_backend),
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "model_max_length": 4096,
        "chat_template": QWEN_TEMPLATE,
    }


@pytest.fixture(scope="module")
def qwen_generation(qwen_backend):
    end, im_end = (qwen_backend.token_to_id(t) for t in ("<|endoftext|>", "<|im_end|>"))
    # Qwen's generation_config names <|endoftext|> as bos although its tokenizer has none
    return {"eos_token_id": [im_end, end], "pad_token_id": end, "bos_token_id": end}


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory, qwen_backend, qwen_config, qwen_generation):
    folder = tmp_path_factory.mktemp("qwen")
    return _write(folder, qwen_backend, qwen_config, qwen_generation)


@pytest.fixture(scope="module")
def qwen(qwen_dir):
    return load_hf_tokenizer(qwen_dir), _reference(qwen_dir)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    backend = _train_backend(LLAMA_SPECIALS)
    ids = {t: backend.token_to_id(t) for t in LLAMA_SPECIALS}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": _added_tokens_decoder(backend),
        "bos_token": "<|begin_of_text|>",
        "eos_token": {"__type": "AddedToken", "content": "<|eot_id|>", "special": True},
        "chat_template": LLAMA_TEMPLATE,
    }
    generation = {
        "bos_token_id": ids["<|begin_of_text|>"],
        "eos_token_id": [ids["<|end_of_text|>"], ids["<|eot_id|>"]],
    }
    folder = _write(tmp_path_factory.mktemp("llama"), backend, config, generation)
    return load_hf_tokenizer(folder), _reference(folder), ids


def _texts(seed: int, n: int, specials: tuple[str, ...] = QWEN_SPECIALS + THINK) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = _sentence(rng)
        for _ in range(
            rng.randint(0, 3) if specials else 0
        ):  # special tokens written inside the text
            at = rng.randint(0, len(text))
            text = text[:at] + rng.choice(specials) + text[at:]
        out.append(text)
    return out


def _ref_ids(ref, text: str) -> list[int]:
    return ref(text, add_special_tokens=False)["input_ids"]


# ---- the Tokenizer protocol ---------------------------------------------------------------


def test_encode_matches_transformers(qwen):
    tok, ref = qwen
    assert isinstance(tok, TokenizerProtocol) and isinstance(CharTokenizer(), TokenizerProtocol)
    texts = _texts(1, 200)
    assert any(t in s for s in texts for t in QWEN_SPECIALS)
    for text in texts:
        assert tok.encode(text) == _ref_ids(ref, text), text
    assert tok.encode("") == []


def test_batched_encode_equals_one_by_one(qwen):
    tok, ref = qwen
    texts = _texts(2, 64)
    assert tok.encode_many(texts) == [tok.encode(t) for t in texts]
    assert tok.encode_many(texts) == ref(texts, add_special_tokens=False)["input_ids"]
    assert tok.encode_many([]) == []


def test_decode_matches_transformers(qwen):
    tok, ref = qwen
    rng = np.random.default_rng(3)
    for _ in range(100):  # random ids: specials, think tags, partial UTF-8 byte sequences
        ids = rng.integers(0, tok.vocab_size, size=int(rng.integers(0, 30))).tolist()
        assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=True), ids
    for text in _texts(4, 50, specials=THINK):  # byte-level BPE is lossless without specials
        assert tok.decode(tok.encode(text)) == text
    # ids from a model vocab larger than the tokenizer's are dropped
    ids = tok.encode("the cat 42")
    assert tok.decode([*ids, tok.vocab_size, tok.vocab_size + 100]) == ref.decode(ids)
    assert tok.decode(np.asarray(ids, np.int32)) == ref.decode(ids)


def test_vocab_and_special_ids_match_transformers(qwen, qwen_backend):
    tok, ref = qwen
    assert tok.vocab_size == len(ref) == qwen_backend.get_vocab_size(with_added_tokens=True)
    im_end, end = qwen_backend.token_to_id("<|im_end|>"), qwen_backend.token_to_id("<|endoftext|>")
    assert (tok.eos_id, tok.pad_id, tok.bos_id) == (ref.eos_token_id, ref.pad_token_id, None)
    assert ref.bos_token_id is None
    assert tok.eos_ids == (im_end, end)
    assert tok.special_tokens == ref.special_tokens_map


def test_tokenizer_json_truncation_and_padding_are_ignored(tmp_path, qwen_backend, qwen_config):
    backend = Tokenizer.from_str(qwen_backend.to_str())
    backend.enable_truncation(4)
    backend.enable_padding(length=64, pad_id=0)
    folder = _write(tmp_path, backend, qwen_config)
    tok, ref = load_hf_tokenizer(folder), _reference(folder)
    text = _texts(5, 1)[0] + " the cat sat on the mat"
    assert len(tok.encode(text)) > 4
    assert tok.encode(text) == _ref_ids(ref, text)
    assert tok.encode_many([text, "a"]) == [_ref_ids(ref, text), _ref_ids(ref, "a")]


def test_split_special_tokens(tmp_path, qwen_backend, qwen_config):
    folder = _write(tmp_path, qwen_backend, {**qwen_config, "split_special_tokens": True})
    tok, ref = load_hf_tokenizer(folder), _reference(folder)
    text = "a<|im_start|>user\nhi<|im_end|>"
    assert tok.encode(text) == _ref_ids(ref, text)
    assert qwen_backend.token_to_id("<|im_start|>") not in tok.encode(text)


# ---- encode_batch and format_prompt with an HF tokenizer ----------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_encode_batch_pads_like_reference(qwen, side):
    tok, ref = qwen
    texts = _texts(6, 9)
    rows = [_ref_ids(ref, t) for t in texts]
    length = max(map(len, rows)) + 3
    pad = [ref.pad_token_id]
    expected = [pad * (length - len(r)) + r if side == "left" else r + pad * (length - len(r))
                for r in rows]  # fmt: skip
    for add_bos in (True, False):  # bos is None: add_bos adds nothing
        tokens, lengths = encode_batch(tok, texts, max_len=length, side=side, add_bos=add_bos)
        np.testing.assert_array_equal(tokens, expected)
        np.testing.assert_array_equal(lengths, [len(r) for r in rows])


def test_encode_batch_uses_the_batch_call(qwen, monkeypatch):
    tok, _ = qwen
    calls = []
    real = tok.encode_many
    monkeypatch.setattr(tok, "encode", lambda text: pytest.fail("encoded one by one"))
    monkeypatch.setattr(tok, "encode_many", lambda texts: calls.append(len(texts)) or real(texts))
    texts = _texts(7, 5)
    tokens, lengths = encode_batch(tok, texts)
    assert calls == [5]
    assert tokens.shape == (5, int(lengths.max()))


def test_format_prompt(qwen):
    tok, ref = qwen
    text = _texts(8, 1, specials=())[0]
    for kw in ({}, {"enable_thinking": False}, {"enable_thinking": True}):
        expected = ref.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, **kw
        )
        assert format_prompt(tok, text, chat=True, **kw) == expected
    assert format_prompt(tok, text, chat=False) == text
    with pytest.raises(ValueError, match="chat=False"):
        format_prompt(tok, text, chat=False, enable_thinking=False)
    with pytest.raises(ValueError, match="has none"):
        format_prompt(CharTokenizer(), text, chat=True)


def test_no_chat_template(tmp_path, qwen_backend, qwen_config):
    config = {k: v for k, v in qwen_config.items() if k != "chat_template"}
    tok = load_hf_tokenizer(_write(tmp_path, qwen_backend, config))
    assert tok.chat_template is None
    with pytest.raises(ValueError, match="has none"):
        format_prompt(tok, "hi", chat=True)
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])


# ---- chat templates against transformers' rendering ---------------------------------------


def _conversations(seed: int):
    rng = random.Random(seed)
    say = lambda: _sentence(rng).strip() or "ok"
    return {
        "single_user": [{"role": "user", "content": say()}],
        "multi_turn": [
            {"role": "system", "content": say()},
            {"role": "user", "content": say()},
            {"role": "assistant", "content": "<think>\n" + say() + "\n</think>\n\n" + say()},
            {"role": "user", "content": say()},
            {"role": "assistant", "content": say(), "tool_calls": None},
            {"role": "user", "content": say()},
        ],
        "no_system": [
            {"role": "user", "content": say()},
            {"role": "assistant", "content": say()},
            {"role": "user", "content": say()},
        ],
    }


TOOLS = [
    {"type": "function", "function": {"name": "add", "description": "a <b>+</b> b & c — «ünï»",
                                      "parameters": {"a": {"type": "integer"}}}},
]  # fmt: skip


@pytest.mark.parametrize("conversation", ["single_user", "multi_turn", "no_system"])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("extra", [{}, {"enable_thinking": True}, {"enable_thinking": False},
                                   {"tools": TOOLS}])  # fmt: skip
def test_chat_template_matches_transformers(qwen, conversation, add_generation_prompt, extra):
    tok, ref = qwen
    messages = _conversations(9)[conversation]
    got = tok.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, **extra)
    expected = ref.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
    )
    assert got == expected
    opened = got.removesuffix("<think>\n\n</think>\n\n").endswith("<|im_start|>assistant\n")
    assert opened == add_generation_prompt


def test_chat_template_jinja_file_wins(tmp_path, qwen_backend, qwen_config):
    folder = _write(tmp_path, qwen_backend, qwen_config)
    (folder / "chat_template.jinja").write_text(JINJA_FILE_TEMPLATE, encoding="utf-8")
    tok, ref = load_hf_tokenizer(folder), _reference(folder)
    assert tok.chat_template == JINJA_FILE_TEMPLATE == ref.chat_template
    for messages in _conversations(10).values():
        for agp in (True, False):
            expected = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=agp)
            assert tok.apply_chat_template(messages, add_generation_prompt=agp) == expected
            assert "ASSISTANT" in expected or not agp


def test_chat_template_named_list(tmp_path, qwen_backend, qwen_config):
    named = [{"name": "tool_use", "template": JINJA_FILE_TEMPLATE},
             {"name": "default", "template": QWEN_TEMPLATE}]  # fmt: skip
    folder = _write(tmp_path, qwen_backend, {**qwen_config, "chat_template": named})
    tok, ref = load_hf_tokenizer(folder), _reference(folder)
    assert tok.chat_template == QWEN_TEMPLATE
    messages = _conversations(11)["multi_turn"]
    assert tok.apply_chat_template(messages) == ref.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    bad = _write(tmp_path / "bad", qwen_backend, {**qwen_config, "chat_template": named[:1]})
    with pytest.raises(ValueError, match="'default'"):
        load_hf_tokenizer(bad)


def test_llama_style_template_and_bos(llama):
    tok, ref, ids = llama
    assert tok.bos_id == ref.bos_token_id == ids["<|begin_of_text|>"]
    assert tok.eos_id == ref.eos_token_id == ids["<|eot_id|>"]
    assert tok.eos_ids == (ids["<|end_of_text|>"], ids["<|eot_id|>"])
    assert tok.pad_id == tok.eos_id  # no pad in either file
    for messages in _conversations(12).values():
        for agp in (True, False):
            kw = {"date_string": "26 Jul 2024"}
            expected = ref.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=agp, **kw
            )
            assert tok.apply_chat_template(messages, add_generation_prompt=agp, **kw) == expected
    # strftime_now is the current date
    before = datetime.datetime.now().strftime("%d %b %Y")
    rendered = tok.apply_chat_template(_conversations(12)["single_user"])
    after = datetime.datetime.now().strftime("%d %b %Y")
    assert re.search(r"Today Date: (\d\d \w{3} \d{4})", rendered)[1] in (before, after)


def test_llama_prompt_gets_one_bos(llama):
    tok, ref, ids = llama
    texts = _texts(13, 4, specials=())
    prompts = [format_prompt(tok, t, chat=True, date_string="1 Jan 2025") for t in texts]
    tokens, lengths = encode_batch(tok, prompts, add_bos=True)
    for b, t in enumerate(texts):
        expected = ref.apply_chat_template(
            [{"role": "user", "content": t}],
            add_generation_prompt=True,
            return_dict=False,
            date_string="1 Jan 2025",
        )
        row = tokens[b, tokens.shape[1] - lengths[b] :].tolist()
        assert row == expected
        assert row.count(ids["<|begin_of_text|>"]) == 1
    # plain text gets the bos prepended
    tokens, lengths = encode_batch(tok, texts, add_bos=True, side="right")
    for b, t in enumerate(texts):
        assert tokens[b, : lengths[b]].tolist() == [ids["<|begin_of_text|>"], *_ref_ids(ref, t)]


def test_raise_exception(qwen):
    tok, ref = qwen
    messages = [{"role": "user", "content": "a"}, {"role": "system", "content": "late"}]
    with pytest.raises(jinja2.TemplateError, match="system message must come first"):
        tok.apply_chat_template(messages)
    with pytest.raises(jinja2.TemplateError, match="system message must come first"):
        ref.apply_chat_template(messages, tokenize=False)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.system('touch {marker}') }}",
        "{{ dict.__class__.__mro__[-1].__subclasses__() }}",
        "{{ messages.append({'role': 'x'}) }}",
        "{% set ns = namespace() %}{% set ns._secret = 1 %}{{ ns }}",
        "{{ namespace(__class__=1) }}",
        "{{ raise_exception.__globals__.keys() }}",
    ],
)
def test_template_is_sandboxed(tmp_path, qwen_backend, qwen_config, template):
    marker = tmp_path / "ran"
    config = {**qwen_config, "chat_template": template.replace("{marker}", str(marker))}
    tok = load_hf_tokenizer(_write(tmp_path / "tok", qwen_backend, config))
    with pytest.raises(jinja2.exceptions.SecurityError):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert not marker.exists()


def test_template_inputs_must_be_plain_data(qwen):
    tok, _ = qwen
    with pytest.raises(ValueError, match=r"messages\[0\]\['content'\] is a object"):
        tok.apply_chat_template([{"role": "user", "content": object()}])
    with pytest.raises(ValueError, match="list of dicts"):
        tok.apply_chat_template({"role": "user", "content": "hi"})
    with pytest.raises(ValueError, match="tools"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}], tools=[print])


# ---- special ids: precedence and bad files ------------------------------------------------


@pytest.mark.parametrize(
    ("config", "generation", "expected"),
    [
        # (tokenizer_config specials, generation_config, (eos_ids, eos_id, pad_id, bos_id))
        ({"eos_token": "<|im_end|>"}, {"eos_token_id": "<|endoftext|>"},
         (("<|endoftext|>", "<|im_end|>"), "<|im_end|>", "<|im_end|>", None)),
        ({}, {"eos_token_id": ["<|im_end|>", "<|endoftext|>"]},
         (("<|im_end|>", "<|endoftext|>"), "<|im_end|>", "<|im_end|>", None)),
        ({"eos_token": {"content": "<|endoftext|>"}},
         {"eos_token_id": ["<|im_end|>", "<|endoftext|>"], "pad_token_id": "<|im_start|>"},
         (("<|im_end|>", "<|endoftext|>"), "<|endoftext|>", "<|im_start|>", None)),
        ({"eos_token": "<|im_end|>", "pad_token": {"content": "<|endoftext|>"},
          "bos_token": "<|im_start|>"},
         {"pad_token_id": "<|im_start|>", "bos_token_id": "<|im_start|>"},
         (("<|im_end|>",), "<|im_end|>", "<|endoftext|>", "<|im_start|>")),
        ({"eos_token": "<|im_end|>", "add_bos_token": False}, None,
         (("<|im_end|>",), "<|im_end|>", "<|im_end|>", None)),
    ],
)  # fmt: skip
def test_special_id_precedence(tmp_path, qwen_backend, config, generation, expected):
    def to_id(value):
        if isinstance(value, list):
            return [qwen_backend.token_to_id(v) for v in value]
        return qwen_backend.token_to_id(value)

    generation = None if generation is None else {k: to_id(v) for k, v in generation.items()}
    tok = load_hf_tokenizer(_write(tmp_path, qwen_backend, config, generation))
    eos_ids, eos, pad, bos = expected
    assert tok.eos_ids == tuple(to_id(list(eos_ids)))
    assert (tok.eos_id, tok.pad_id) == (to_id(eos), to_id(pad))
    assert tok.bos_id == (None if bos is None else to_id(bos))
    assert tok.eos_id in tok.eos_ids
    if not generation:  # transformers reads the tokenizer_config side alone
        ref = _reference(tmp_path)
        assert (tok.eos_id, tok.pad_id if ref.pad_token_id is not None else None) == (
            ref.eos_token_id,
            ref.pad_token_id,
        )


def test_bad_folders(tmp_path, qwen_backend, qwen_config):
    with pytest.raises(ValueError, match=r"tokenizer\.json not found.*sentencepiece"):
        load_hf_tokenizer(tmp_path / "empty")
    im_end = qwen_backend.token_to_id("<|im_end|>")
    cases = [
        ({}, None, "no eos token"),
        ({"eos_token": "<|nope|>"}, None, "'<|nope|>' is not a token"),
        ({"eos_token": 7}, None, "eos_token must be"),
        ({}, {"eos_token_id": qwen_backend.get_vocab_size() + 1}, r"eos_token_id must be an int"),
        ({}, {"eos_token_id": [im_end, "x"]}, "eos_token_id must be"),
        ({"eos_token": "<|im_end|>", "bos_token": "<|im_start|>"}, {"bos_token_id": im_end},
         "bos_token_id"),
        ({"eos_token": "<|im_end|>", "added_tokens_decoder": {"5": {"content": "<|im_end|>"}}},
         None, "added_tokens_decoder gives '<|im_end|>' id 5"),
        ({"eos_token": "<|im_end|>", "chat_template": {"default": "x"}}, None,
         "must be a string or a list"),
        ({"eos_token": "<|im_end|>", "chat_template": "{% if %}"}, None, "does not parse"),
    ]  # fmt: skip
    for i, (config, generation, match) in enumerate(cases):
        folder = _write(tmp_path / str(i), qwen_backend, config, generation)
        with pytest.raises(ValueError, match=match):
            load_hf_tokenizer(folder)
    broken = _write(tmp_path / "broken", qwen_backend, None)
    (broken / "generation_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"generation_config\.json: not valid JSON"):
        load_hf_tokenizer(broken)
