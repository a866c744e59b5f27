"""Hugging Face tokenizers from a model folder (tokenizer.json), with chat templates.

Built on the ``tokenizers`` library and ``jinja2`` only (transformers is not imported). Only
fast tokenizers are supported: the folder must hold ``tokenizer.json``; slow (``vocab.txt``,
``tokenizer.model`` / sentencepiece) tokenizers are not.

Special ids, from ``tokenizer_config.json`` and ``generation_config.json`` (both optional):

- ``eos_ids``: generation_config ``eos_token_id`` (an int or a list) first, then
  tokenizer_config ``eos_token``, in that order, duplicates dropped. The sampler stops at any.
- ``eos_id``: tokenizer_config ``eos_token`` (the token a finished completion ends with, as the
  model was tuned: ``<|im_end|>`` for Qwen instruct, ``<|eot_id|>`` for Llama 3 instruct), else
  the first of ``eos_ids``. No eos in either file is an error.
- ``pad_id``: tokenizer_config ``pad_token``, else generation_config ``pad_token_id``, else
  ``eos_id`` (padding is masked out, so any id works; eos is always a real token).
- ``bos_id``: tokenizer_config ``bos_token``, ``None`` when it is null or absent (Qwen). A
  generation_config ``bos_token_id`` is only checked against it: Qwen's generation_config names
  ``<|endoftext|>`` as bos although its tokenizer and prompts have none, so it is not used.

Token strings may be plain strings or AddedToken-style dicts (``{"content": ...}``); every entry
of tokenizer_config ``added_tokens_decoder`` must have the same id in tokenizer.json.

Chat template: ``chat_template.jinja`` beside the config wins over tokenizer_config
``chat_template`` (as transformers 5 loads a folder); the config's may be a string or a list of
``{"name", "template"}``, of which "default" is used. It is rendered as transformers renders it:
a sandboxed ``ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`` with
``jinja2.ext.loopcontrols``, the ``{% generation %}`` tag (rendered as its body), a ``tojson``
filter that leaves non-ASCII and HTML characters alone, ``raise_exception`` and
``strftime_now`` globals, and variables ``messages``, ``add_generation_prompt``, ``tools=None``,
``documents=None``, the tokenizer's special-token strings (``bos_token``, ``eos_token``, ...)
and any extra keyword (``enable_thinking``...). Templates come from a data folder, so they only
ever run sandboxed and only see plain data (str/int/float/bool/None, lists, dicts).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.sandbox
import jinja2.utils
import numpy as np
import tokenizers

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
GENERATION_FILE = "generation_config.json"
TEMPLATE_FILE = "chat_template.jinja"
# transformers' named special tokens (tokenizer_config keys; chat templates see their strings)
NAMED_TOKENS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: marks assistant text in training templates
    (transformers uses it for an assistant-token mask, which is not built here), so it renders
    as its body."""

    tags = frozenset({"generation"})

    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _Namespace(jinja2.utils.Namespace):
    """``namespace(...)`` that refuses underscore names, so a template cannot plant attributes
    that shadow Python internals of the object."""

    def __init__(*args, **kwargs):
        self, attrs = args[0], dict(*args[1:], **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat template namespace attribute {name!r}: names starting with '_' are refused"
            )


class _DictBuilder:
    """``dict(...)`` / ``dict.fromkeys(...)`` for templates without handing them the builtin
    type (whose class attributes lead back into the interpreter)."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # jinja's own tojson HTML-escapes <, >, & and ' (wrong inside a prompt); this is plain JSON
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt):
    return datetime.datetime.now().strftime(fmt)


def _environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals.update(
        raise_exception=_raise_exception,
        strftime_now=_strftime_now,
        dict=_DictBuilder(),
        namespace=_Namespace,
    )
    return env


def _plain(value: Any, where: str) -> Any:
    """``value`` rebuilt from exact JSON-like types, so a template only sees objects whose
    methods are harmless; anything else is a ValueError naming ``where``."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, np.generic):
        return _plain(value.item(), where)
    # subclasses (enums...) carry extra methods: back to the base type
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k, where): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise ValueError(
        f"chat template input {where} is a {type(value).__name__}; allowed: str, int, float, "
        "bool, None, and lists/tuples/dicts of those"
    )


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` behind the project's ``Tokenizer`` protocol, plus
    ``apply_chat_template``. Build it with ``load_hf_tokenizer``.

    ``vocab_size`` is the tokenizer's (added tokens included); a model's embedding may be
    larger (Qwen pads it to a multiple of 128), and ``decode`` drops ids past the tokenizer's.
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        eos_ids: tuple[int, ...],
        eos_id: int,
        pad_id: int,
        bos_id: int | None,
        special_tokens: Mapping[str, str],
        chat_template: str | None,
        template_source: str = "chat_template",
    ):
        self._backend = backend
        self._eos_ids = tuple(eos_ids)
        self._eos_id = eos_id
        self._pad_id = pad_id
        self._bos_id = bos_id
        self._special_tokens = dict(special_tokens)
        self._chat_template = chat_template
        self._compiled = None
        if chat_template is not None:
            try:
                self._compiled = _environment().from_string(chat_template)
            except jinja2.exceptions.TemplateSyntaxError as e:
                raise ValueError(f"{template_source}: the chat template does not parse: {e}") from e

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def bos_id(self) -> int | None:
        return self._bos_id

    @property
    def eos_id(self) -> int:
        return self._eos_id

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return self._eos_ids

    @property
    def chat_template(self) -> str | None:
        return self._chat_template

    @property
    def special_tokens(self) -> dict[str, str]:
        """Special-token strings by name (``eos_token``...), as the chat template sees them."""
        return dict(self._special_tokens)

    def encode(self, text: str) -> list[int]:
        # special tokens written in the text are still matched; none are added around it
        return self._backend.encode(text, add_special_tokens=False).ids

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]`` in one (parallel) ``tokenizers`` batch call."""
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        vocab = self.vocab_size
        # ids past the tokenizer's vocab can come from a larger model embedding: dropped
        kept = [int(i) for i in ids if 0 <= int(i) < vocab]
        return self._backend.decode(kept, skip_special_tokens=True)

    def apply_chat_template(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **kwargs
    ) -> str:
        """The chat template rendered for ``messages`` (a list of ``{"role", "content", ...}``
        dicts; keys whose value is None are dropped first, as transformers does).

        ``kwargs`` become template variables (``enable_thinking=False``, ``tools=[...]``) and
        override the defaults (``tools=None``, ``documents=None``, special-token strings).
        """
        if self._compiled is None:
            raise ValueError(
                "this tokenizer has no chat template (no chat_template.jinja and no "
                f"'chat_template' in {CONFIG_FILE}); pass plain-text prompts instead"
            )
        if isinstance(messages, (str, Mapping)) or not isinstance(messages, Sequence):
            raise ValueError(f"messages must be a list of dicts, got {type(messages).__name__}")
        chat = []
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise ValueError(f"messages[{i}] must be a dict, got {type(message).__name__}")
            chat.append(
                _plain({k: v for k, v in message.items() if v is not None}, f"messages[{i}]")
            )
        variables = {**self._special_tokens, "tools": None, "documents": None}
        variables.update({k: _plain(v, k) for k, v in kwargs.items()})
        return self._compiled.render(
            messages=chat, add_generation_prompt=bool(add_generation_prompt), **variables
        )


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _token_text(value: Any, where: str) -> str | None:
    """A special-token entry as its string: a str, an AddedToken-style dict, or None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(
        f"{where} must be a string, a dict with a 'content' string, or null; got {value!r}"
    )


def _config_ids(value: Any, where: str, vocab: int) -> list[int]:
    """generation_config ids: an int, a list of ints, or null, each in [0, vocab)."""
    items = [] if value is None else value if isinstance(value, list) else [value]
    for v in items:
        if type(v) is not int or not 0 <= v < vocab:
            raise ValueError(
                f"{where} must be an int id in [0, {vocab}) or a list of them; got {value!r}"
            )
    return items


def _chat_template(folder: Path, config: dict) -> tuple[str | None, str]:
    """(template text or None, where it came from): the .jinja file wins over the config."""
    file = folder / TEMPLATE_FILE
    if file.is_file():
        return file.read_text(encoding="utf-8"), str(file)
    where = f"{folder / CONFIG_FILE}: 'chat_template'"
    template = config.get("chat_template")
    if template is None or isinstance(template, str):
        return template, where
    if isinstance(template, list):
        named = {}
        for entry in template:
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("name"), str)
                and isinstance(entry.get("template"), str)
            ):
                raise ValueError(
                    f"{where}: list entries must be {{'name': str, 'template': str}}, got {entry!r}"
                )
            named[entry["name"]] = entry["template"]
        if "default" not in named:
            raise ValueError(f"{where}: no template named 'default' among {sorted(named)}")
        return named["default"], f"{where} 'default'"
    raise ValueError(
        f"{where} must be a string or a list of {{'name', 'template'}} dicts, got "
        f"{type(template).__name__}"
    )


def load_hf_tokenizer(path: str | Path) -> HFTokenizer:
    """Load the tokenizer of a Hugging Face model folder (see the module docstring)."""
    folder = Path(path)
    tokenizer_file = folder / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        raise ValueError(
            f"{tokenizer_file} not found: a fast tokenizer (tokenizer.json) is required; slow "
            "tokenizers (vocab files, sentencepiece tokenizer.model) are not supported"
        )
    config_file, generation_file = folder / CONFIG_FILE, folder / GENERATION_FILE
    config, generation = _read_json(config_file), _read_json(generation_file)
    backend = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    # a tokenizer.json may carry padding/truncation settings; encode must return every token
    backend.no_padding()
    backend.no_truncation()
    # split_special_tokens=True: special-token text in the input is tokenized as plain text
    backend.encode_special_tokens = bool(config.get("split_special_tokens", False))
    if config.get("clean_up_tokenization_spaces") and type(backend.model).__name__ != "BPE":
        raise ValueError(
            f"{config_file}: clean_up_tokenization_spaces=true is not supported (decode returns "
            "the tokenizer's text as is; only BPE tokenizers, which ignore it, are)"
        )
    vocab = backend.get_vocab_size(with_added_tokens=True)

    for key, entry in (config.get("added_tokens_decoder") or {}).items():
        text = _token_text(entry, f"{config_file}: added_tokens_decoder[{key!r}]")
        if not key.isdigit() or text is None:
            raise ValueError(
                f"{config_file}: added_tokens_decoder maps id strings to tokens, got {key!r}: "
                f"{entry!r}"
            )
        if backend.token_to_id(text) != int(key):
            raise ValueError(
                f"{config_file}: added_tokens_decoder gives {text!r} id {key}, but "
                f"{tokenizer_file} gives {backend.token_to_id(text)}"
            )

    # the named tokens must be well formed; other "*_token" keys are model-specific tokens
    # (image_token...) when they hold a token, and flags otherwise (add_bos_token: true)
    special_tokens = {}
    for key, value in config.items():
        if key in NAMED_TOKENS:
            text = _token_text(value, f"{config_file}: {key}")
        elif key.endswith("_token"):
            text = value if isinstance(value, str) else None
            if isinstance(value, dict) and isinstance(value.get("content"), str):
                text = value["content"]
        else:
            continue
        if text is not None:
            special_tokens[key] = text

    def token_id(name: str) -> int | None:
        text = special_tokens.get(name)
        if text is None:
            return None
        i = backend.token_to_id(text)
        if i is None:
            raise ValueError(f"{config_file}: {name}={text!r} is not a token of {tokenizer_file}")
        return i

    eos_cfg, pad_cfg, bos_cfg = token_id("eos_token"), token_id("pad_token"), token_id("bos_token")
    eos_gen = _config_ids(generation.get("eos_token_id"), f"{generation_file}: eos_token_id", vocab)
    pad_gen = _config_ids(generation.get("pad_token_id"), f"{generation_file}: pad_token_id", vocab)
    bos_gen = _config_ids(generation.get("bos_token_id"), f"{generation_file}: bos_token_id", vocab)
    eos_ids = tuple(dict.fromkeys([*eos_gen, *([] if eos_cfg is None else [eos_cfg])]))
    if not eos_ids:
        raise ValueError(
            f"no eos token: set 'eos_token' in {config_file} or 'eos_token_id' in {generation_file}"
        )
    if len(pad_gen) > 1:
        raise ValueError(f"{generation_file}: pad_token_id must be one id, got {pad_gen}")
    if bos_cfg is not None and bos_gen and bos_gen != [bos_cfg]:
        raise ValueError(
            f"{config_file} bos_token has id {bos_cfg} but {generation_file} bos_token_id is "
            f"{bos_gen}"
        )
    eos_id = eos_ids[0] if eos_cfg is None else eos_cfg
    pad_id = pad_cfg if pad_cfg is not None else pad_gen[0] if pad_gen else eos_id
    template, source = _chat_template(folder, config)
    return HFTokenizer(
        backend,
        eos_ids=eos_ids,
        eos_id=eos_id,
        pad_id=pad_id,
        bos_id=bos_cfg,
        special_tokens=special_tokens,
        chat_template=template,
        template_source=source,
    )
