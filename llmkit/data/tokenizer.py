"""Load a tokenizer, or train one from scratch with `tokenizers` so that the same corpus and
settings always give the same vocabulary and the same ids.

`tokenizers`' WordPiece and Unigram trainers are not repeatable (Rust hash-map order decides ties
and float sums; measured with tokenizers 0.23.3): WordPiece even changes its vocabulary *set*. Its
plain BPE trainer is repeatable, so a WordPiece vocabulary is learnt as BPE over words marked with
a word-start symbol (`▁the`, `ing`) and converted (`the`, `##ing`). Unigram keeps the same pieces
from run to run, so its ids are fixed by sorting.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from llmkit.data.spans import check_sentinels, sentinel_names
from llmkit.errors import LlmkitError
from llmkit.paths import cache_root, resolve_path

if TYPE_CHECKING:
    from llmkit.config import Config, TokenizerSection

BERT_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                 "mask_token": "[MASK]"}
ROBERTA_SPECIALS = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
                    "mask_token": "<mask>", "cls_token": "<s>", "sep_token": "</s>"}
WORD_START = "▁"
FORMAT_VERSION = 1  # bump when training changes, so cached tokenizers are rebuilt


def load_tokenizer(name_or_path: str, key: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_path(name_or_path)
    if os.path.isdir(path) and not any(
        (Path(path) / f).exists() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model")
    ):
        raise LlmkitError(f"{key}: {path} has no tokenizer files (tokenizer.json / vocab.txt); "
                          "set tokenizer.name_or_path to a folder that has them")
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise LlmkitError(f"{key}: cannot load a tokenizer from {name_or_path}: {type(e).__name__}: {e}") from None


def choose_tokenizer(cfg: Config, texts: Callable[[], Iterable[str]], corpus_fingerprint: str, sentinels: int = 0):
    """tokenizer.name_or_path, else the model's tokenizer, else one trained on `texts`. With `sentinels`, the
    tokenizer has that many T5 sentinel tokens and an eos (a trained one gets them; llmkit.data.spans)."""
    configured = configured_tokenizer(cfg)
    if configured is not None and sentinels:
        check_sentinels(configured, sentinels, "tokenizer.name_or_path" if cfg.tokenizer.name_or_path
                        else "model.name_or_path")
    return configured or trained_tokenizer(cfg.tokenizer, texts, corpus_fingerprint, cache_root(cfg.data), sentinels)


def configured_tokenizer(cfg: Config):
    """tokenizer.name_or_path's, else the model's tokenizer; None when the run trains one."""
    if cfg.tokenizer.name_or_path:
        return load_tokenizer(cfg.tokenizer.name_or_path, "tokenizer.name_or_path", cfg.model.trust_remote_code)
    if cfg.model.name_or_path:
        return load_tokenizer(cfg.model.name_or_path, "model.name_or_path", cfg.model.trust_remote_code)
    return None


def trained_tokenizer(section: TokenizerSection, texts: Callable[[], Iterable[str]], corpus_fingerprint: str,
                      cache_root: Path, sentinels: int = 0):
    """The tokenizer trained on `texts` as `section` says, from the cache when it was trained before."""
    from transformers import AutoTokenizer

    settings = section.model_dump(exclude={"name_or_path"}) | ({"sentinels": sentinels} if sentinels else {})
    key = hashlib.sha256(json.dumps([FORMAT_VERSION, corpus_fingerprint, settings], sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_root / "tokenizers" / key
    if not (folder / "tokenizer.json").exists():
        tokenizer = train_tokenizer(section, texts, sentinels)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same tokenizer first
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(folder)


def train_tokenizer(section: TokenizerSection, texts: Callable[[], Iterable[str]], sentinels: int = 0):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if section.algorithm == "bpe":
        specials = ROBERTA_SPECIALS
        special_list = list(dict.fromkeys(specials.values()))
        tok = Tokenizer(models.BPE())
        if section.lowercase:
            tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=section.vocab_size, min_frequency=section.min_frequency,
                                      special_tokens=special_list, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(texts(), trainer)
        bos, eos = specials["bos_token"], specials["eos_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
            special_tokens=[(t, tok.token_to_id(t)) for t in (bos, eos)])
    else:
        specials = BERT_SPECIALS
        special_list = list(specials.values())
        normalizer = normalizers.BertNormalizer(lowercase=section.lowercase, strip_accents=section.lowercase)
        if section.algorithm == "wordpiece":
            tok = Tokenizer(models.WordPiece(vocab=_wordpiece_vocab(section, texts, normalizer, special_list),
                                             unk_token=specials["unk_token"]))
            tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            tok.decoder = decoders.WordPiece()
        else:
            tok = Tokenizer(models.Unigram())
            tok.normalizer = normalizer
            tok.pre_tokenizer = pre_tokenizers.Metaspace()
            trainer = trainers.UnigramTrainer(vocab_size=section.vocab_size, special_tokens=special_list,
                                              unk_token=specials["unk_token"], show_progress=False)
            tok.train_from_iterator(texts(), trainer)
            pieces = json.loads(tok.to_str())["model"]["vocab"]
            ordered = [tuple(p) for p in pieces if p[0] in special_list] + sorted(tuple(p) for p in pieces if p[0] not in special_list)
            tok.model = models.Unigram(ordered, unk_id=special_list.index(specials["unk_token"]), byte_fallback=False)
            tok.decoder = decoders.Metaspace()
        tok.normalizer = normalizer
        cls, sep = specials["cls_token"], specials["sep_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(t, tok.token_to_id(t)) for t in (cls, sep)])
    if sentinels:  # T5's: sentinels after the learnt vocabulary, each text ended by eos (a BERT-style [SEP])
        tok.add_special_tokens(sentinel_names(sentinels))
        specials = {"eos_token": specials["sep_token"], **specials, "extra_special_tokens": sentinel_names(sentinels)}
        eos = specials["eos_token"]
        tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                                           special_tokens=[(eos, tok.token_to_id(eos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **specials)


def _wordpiece_vocab(section: TokenizerSection, texts, normalizer, special_list: list[str]) -> dict[str, int]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizer
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.BertPreTokenizer(),
        pre_tokenizers.Metaspace(replacement=WORD_START, prepend_scheme="always", split=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=section.vocab_size, min_frequency=section.min_frequency,
                                  special_tokens=special_list, show_progress=False)
    bpe.train_from_iterator(texts(), trainer)
    learnt = sorted(bpe.get_vocab().items(), key=lambda item: item[1])
    alphabet = [t for t, _ in learnt if len(t) == 1 and t != WORD_START]
    # Every character both word-initial and continuing, so no word falls back to [UNK].
    wordpieces = list(special_list) + alphabet + [f"##{c}" for c in alphabet]
    for token, _ in learnt:
        if token in special_list or token == WORD_START or len(token) == 1:
            continue
        wordpieces.append(token[1:] if token.startswith(WORD_START) else f"##{token}")
    vocab: dict[str, int] = {}
    for piece in wordpieces:
        if len(vocab) >= max(section.vocab_size, len(special_list) + 2 * len(alphabet)):
            break
        vocab.setdefault(piece, len(vocab))
    return vocab


def fingerprint_files(paths: Iterable[str | None]) -> str:
    """Content hash of data files (streamed): a cache entry is reused only for identical data."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(b"\0none\0" if path is None else b"\0file\0")
        if path is not None and os.path.isfile(path):
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()
