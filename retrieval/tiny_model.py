"""Build bge-m3-shaped checkpoints with random weights, for tests, benchmarks and offline demos.

The real BAAI/bge-m3 weights cannot be downloaded everywhere (CI has no hub access), yet the
product must run through the real FlagEmbedding code path. This writes a folder that
`BGEM3FlagModel` loads exactly like the real one: an XLM-RoBERTa body, a fast tokenizer,
`colbert_linear.pt` and `sparse_linear.pt`.

Traps this module avoids (FlagEmbedding 1.4.2, transformers 5.x):
- the default `initializer_range=0.02` makes every input produce nearly the same CLS vector, so
  dense scores are all ~1.0; a range of 0.5 gives vectors that differ;
- transformers 5 rebuilds an XLM-R tokenizer on load as WhitespaceSplit + Metaspace and drops
  other normalizers, so the tokenizer is trained with exactly that pipeline;
- FlagEmbedding random-initialises both heads when either head file is missing, so both are written;
- a random sparse head zeroes about half the tokens (ReLU); a positive bias keeps lexical
  matching meaningful for tests.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_SEED_TEXT = """\
kotae answers questions from your team's documents in Slack, with citations.
Mention the bot or use the slash command; the answer arrives in the thread.
Dense vectors, sparse lexical weights and ColBERT multi-vectors come from one forward pass.
FAISS stores the dense vectors; hybrid search mixes dense, sparse and ColBERT scores.
答えはスレッドに返信されます。出典として文書のタイトルと見出しが表示されます。
経費精算の締め切りは毎月二十五日です。領収書は電子で提出してください。
リモートワークの申請は前日までに上長へ連絡します。検索はベクトルと語彙の両方を使います。
埋め込みモデルは多言語に対応し、日本語と英語を同じように扱います。
"""


@dataclass(frozen=True)
class ModelShape:
    """Sizes of the XLM-RoBERTa body. `TINY` is for tests; `BGE_M3` is the real architecture."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_tokens: int
    vocab_size: int


TINY = ModelShape(
    hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, max_tokens=1024,
    vocab_size=3000,
)
BGE_M3 = ModelShape(
    hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096, max_tokens=8192,
    vocab_size=8000,
)


def _default_corpus() -> list[str]:
    texts = [_SEED_TEXT]
    samples = Path(__file__).resolve().parent.parent / "kotae" / "samples"
    if samples.is_dir():
        for path in sorted(samples.rglob("*")):
            if path.suffix in {".md", ".txt", ".rst", ".html"}:
                texts.append(path.read_text(encoding="utf-8", errors="ignore"))
    return texts


def _train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    tokenizer = Tokenizer(models.Unigram())
    # The same pipeline transformers 5 rebuilds on load; anything else changes the ids.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()]
    )
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>", max_piece_length=8,
        show_progress=False,  # its progress bar leaves blank lines on a terminal
    )
    # Repeat the text so short corpora still yield a vocabulary of useful pieces.
    tokenizer.train_from_iterator(texts * 3, trainer=trainer)
    tokenizer.add_special_tokens(["<mask>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    fast = XLMRobertaTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
    )
    fast.save_pretrained(str(out_dir))


def build_tiny_bge_m3(
    out_dir: Path,
    shape: ModelShape = TINY,
    corpus: Iterable[str] | None = None,
    seed: int = 0,
) -> Path:
    """Write a bge-m3-shaped checkpoint with random weights to `out_dir` and return it."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = list(corpus) if corpus is not None else _default_corpus()
    _train_tokenizer(texts, shape.vocab_size, out_dir)
    vocab_size = len(json.loads((out_dir / "tokenizer.json").read_text())["model"]["vocab"]) + 1

    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_tokens + 2,  # XLM-R positions start after pad id 1
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
        initializer_range=0.5,  # 0.02 gives every input the same CLS vector
        type_vocab_size=1,
    )
    model = XLMRobertaModel(config)  # with pooler, like the real checkpoint
    model.save_pretrained(str(out_dir))
    torch.save(torch.nn.Linear(shape.hidden_size, shape.hidden_size).state_dict(),
               out_dir / "colbert_linear.pt")
    sparse_linear = torch.nn.Linear(shape.hidden_size, 1)
    with torch.no_grad():
        # A positive bias keeps most token weights above ReLU's zero, so the random model still
        # gives a lexical signal (shared tokens score) instead of dropping half the tokens.
        sparse_linear.bias.fill_(1.0)
    torch.save(sparse_linear.state_dict(), out_dir / "sparse_linear.pt")
    logger.info("wrote a random bge-m3-shaped model (%s) to %s", shape, out_dir)
    return out_dir
