"""BGEM3Embeddings: a LangChain `Embeddings` for BAAI/bge-m3 through FlagEmbedding's BGEM3FlagModel.

Why not just call `BGEM3FlagModel.encode`? It re-runs its first batch as a batch-size probe on
every call (twice the work for a single query) and asks for one output type per call site. This
class loads the same model object through FlagEmbedding and drives its forward pass directly:
same tokenizer, same heads, same pooling and normalisation, so the outputs equal `encode`'s, but
dense, sparse and ColBERT views come from ONE forward pass and nothing runs twice. One change:
the sparse head runs text by text (`retrieval.m3_forward`), so a text's token weights never
depend on the batch it was in.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from retrieval.devices import cuda_available
from retrieval.errors import ModelUnavailable
from retrieval.m3_forward import m3_forward
from retrieval.settings import Settings

logger = logging.getLogger(__name__)

SparseWeights = dict[int, float]
_HEAD_FILES = ("colbert_linear.pt", "sparse_linear.pt")
# Either file of each pair will do: transformers loads safetensors or a torch pickle, and a fast
# XLM-R tokenizer from tokenizer.json or from the sentencepiece model.
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model")
_CHECKPOINT_FILES = ("config.json, model.safetensors (or pytorch_model.bin), tokenizer.json, "
                     "colbert_linear.pt, sparse_linear.pt")

# The one mapping from `Settings` to the fields of `BGEM3Embeddings`.
_SETTINGS_FIELDS = {
    "model_name_or_path": "embedding_model",
    "device": "embedding_device",
    "use_fp16": "embedding_fp16",
    "batch_size": "embedding_batch_size",
    "cpu_threads": "embedding_cpu_threads",
    "passage_max_tokens": "passage_max_tokens",
    "query_max_tokens": "query_max_tokens",
}


@dataclass
class EncodedBatch:
    """All views of a batch of texts from one forward pass, in input order."""

    dense: np.ndarray  # (n, dim) float32, L2-normalised
    sparse: list[SparseWeights]  # token id -> weight (max over occurrences, specials removed)
    colbert: list[np.ndarray] | None  # per text (tokens-1, dim) float32, normalised


def resolve_device(device: str) -> str:
    """`auto` means the first GPU when there is one. One device only: FlagEmbedding would start
    a worker process per GPU when given several, which this app must not do implicitly."""
    if device == "auto":
        return "cuda:0" if cuda_available() else "cpu"
    if device.startswith("cuda") and not cuda_available():
        raise ModelUnavailable(
            f"KOTAE_EMBEDDING_DEVICE={device} but no CUDA GPU is visible to torch; "
            "set KOTAE_EMBEDDING_DEVICE=cpu (or auto)."
        )
    return "cuda:0" if device == "cuda" else device


class BGEM3Embeddings(BaseModel, Embeddings):
    """bge-m3 embeddings: normalised dense vectors for LangChain, plus sparse and ColBERT views.

    Fields not given come from `Settings` (the `KOTAE_*` environment), read once per
    construction; the model loads lazily, once, thread-safely, on first use.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    model_name_or_path: str = Field(
        description="Hugging Face id (default BAAI/bge-m3) or a local checkpoint folder")
    device: str = Field(description="auto | cpu | cuda | cuda:N")
    use_fp16: bool | None = Field(description="half precision; None means on for cuda, off for cpu")
    batch_size: int | None = Field(
        description="texts per forward pass; None means 16 on cpu, 64 on cuda")
    cpu_threads: int | None = Field(
        description="torch CPU threads (process-wide); a busy bot host often does better "
                    "with fewer than all cores")
    passage_max_tokens: int
    query_max_tokens: int

    _flag_model: Any = PrivateAttr(default=None)
    _load_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _tokenizer_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _device: str | None = PrivateAttr(default=None)
    _unused_token_ids: frozenset[int] = PrivateAttr(default=frozenset())

    @classmethod
    def from_settings(cls, settings: Settings) -> BGEM3Embeddings:
        return cls(**_fields_from(settings))

    @model_validator(mode="before")
    @classmethod
    def _missing_fields_from_settings(cls, data: Any) -> Any:
        """`BGEM3Embeddings(device="cpu")` takes everything else from the environment, as
        `from_settings(Settings())` would: one read of the environment, not one per field."""
        if isinstance(data, dict) and not _SETTINGS_FIELDS.keys() <= data.keys():
            data = {**_fields_from(Settings()), **data}
        return data

    # --- loading -------------------------------------------------------------------------------

    @property
    def flag_model(self) -> Any:
        """The underlying `BGEM3FlagModel`, loaded on first access."""
        if self._flag_model is None:
            with self._load_lock:
                if self._flag_model is None:
                    self._flag_model = self._load()
        return self._flag_model

    @property
    def loaded(self) -> bool:
        return self._flag_model is not None

    @property
    def batch(self) -> int:
        """Texts per forward pass: large batches keep a GPU busy; on CPU they only cost memory."""
        if self.batch_size is not None:
            return self.batch_size
        return 64 if self.resolved_device.startswith("cuda") else 16

    @property
    def resolved_device(self) -> str:
        if self._device is None:
            self._device = resolve_device(self.device)
        return self._device

    def _load(self) -> Any:
        local_dir = locate_checkpoint(self.model_name_or_path)  # before torch: fails in ms
        device = self.resolved_device
        fp16 = device.startswith("cuda") if self.use_fp16 is None else self.use_fp16
        # ~3 s on 2 cores, imported only when a model is needed. ~2.4 s of it is torch and
        # transformers' model stack, which XLM-R needs anyway; the rest (datasets, pandas,
        # pyarrow, peft) comes with the m3 module itself, which imports FlagEmbedding's
        # fine-tuning package: no import of the real class avoids it without stubbing
        # FlagEmbedding's packages, which could break silently on an upgrade.
        from FlagEmbedding import BGEM3FlagModel

        from retrieval.indexing.kernels import bound_native_memory

        # before the first forward pass (oneDNN reads its setting once): a refresh inside
        # `kotae serve` embeds many shapes too, after queries have run
        bound_native_memory()
        if self.cpu_threads is not None:
            import torch

            torch.set_num_threads(self.cpu_threads)

        try:
            flag_model = BGEM3FlagModel(
                str(local_dir), use_fp16=fp16, devices=device, batch_size=self.batch,
                query_max_length=self.query_max_tokens, passage_max_length=self.passage_max_tokens,
            )
        except (OSError, ValueError) as error:
            raise ModelUnavailable(
                f"Could not load the bge-m3 checkpoint at {local_dir}: {error}. "
                "Point KOTAE_EMBEDDING_MODEL at a complete bge-m3 folder."
            ) from error
        model = flag_model.model
        if device == "cpu":
            model.float()  # fp16 matmuls are slow or missing on CPU
        model.to(device)
        model.eval()
        tokenizer = flag_model.tokenizer
        self._unused_token_ids = frozenset(
            tid for tid in (tokenizer.cls_token_id, tokenizer.eos_token_id,
                            tokenizer.pad_token_id, tokenizer.unk_token_id) if tid is not None
        )
        logger.info("loaded bge-m3 from %s on %s (fp16=%s)", local_dir, device, fp16)
        return flag_model

    # --- encoding ------------------------------------------------------------------------------

    def encode(
        self,
        texts: Sequence[str],
        *,
        max_tokens: int | None = None,
        colbert: bool = False,
        batch_size: int | None = None,
    ) -> EncodedBatch:
        """Dense + sparse (+ ColBERT) views of `texts` from one forward pass per batch.

        Mirrors `BGEM3FlagModel.encode_single_device` (tokenise without padding, sort by length,
        pad per batch) minus its batch-size probe, so results are identical. `batch_size`
        (default `self.batch`) is for callers that size batches themselves (the indexer's
        token budget).
        """
        import torch

        texts = list(texts)
        if not texts:
            return EncodedBatch(np.zeros((0, self.dimension), np.float32), [],
                                [] if colbert else None)

        order_parts: list[np.ndarray] = []
        dense_parts: list[np.ndarray] = []
        sparse: list[SparseWeights] = [{} for _ in texts]
        colbert_vecs: list[np.ndarray] = [np.zeros(0)] * len(texts)
        batches = self._forward_batches(texts, max_tokens or self.passage_max_tokens,
                                        return_dense=True, return_sparse=True,
                                        return_colbert_vecs=colbert, batch_size=batch_size)
        with torch.inference_mode():
            for batch_idx, batch, out in batches:
                order_parts.append(batch_idx)
                dense_parts.append(out["dense_vecs"].float().cpu().numpy())
                weights = out["sparse_vecs"].squeeze(-1).float().cpu().numpy()
                ids = batch["input_ids"].cpu().numpy()
                for i, weights_of_text in zip(batch_idx, self._sparse_dicts(weights, ids),
                                              strict=True):
                    sparse[i] = weights_of_text
                if colbert:
                    mask = batch["attention_mask"].cpu().numpy()
                    vecs = out["colbert_vecs"].float().cpu().numpy()
                    for row, i in enumerate(batch_idx):
                        # drop padding; CLS was already left out by the head
                        colbert_vecs[i] = vecs[row][: int(mask[row].sum()) - 1]
        dense = np.empty((len(texts), dense_parts[0].shape[1]), np.float32)
        dense[np.concatenate(order_parts)] = np.concatenate(dense_parts, axis=0)
        return EncodedBatch(dense=dense, sparse=sparse, colbert=colbert_vecs if colbert else None)

    def _sparse_dicts(self, weights: np.ndarray, ids: np.ndarray) -> list[SparseWeights]:
        """FlagEmbedding's rule for a whole batch: per text, the max weight of each token id,
        specials and non-positive weights dropped — one sort instead of a Python loop over
        every token."""
        unused = np.fromiter(self._unused_token_ids, np.int64)
        rows, cols = np.nonzero((weights > 0) & ~np.isin(ids, unused))
        token, weight = ids[rows, cols], weights[rows, cols]
        # by row, then token id, then weight descending: the first of each (row, token) is max
        order = np.lexsort((-weight, token, rows))
        rows, token, weight = rows[order], token[order], weight[order]
        first = np.ones(len(rows), bool)
        first[1:] = (rows[1:] != rows[:-1]) | (token[1:] != token[:-1])
        rows, tokens, values = rows[first], token[first].tolist(), weight[first].tolist()
        bounds = np.searchsorted(rows, np.arange(weights.shape[0] + 1)).tolist()
        return [dict(zip(tokens[bounds[r]:bounds[r + 1]], values[bounds[r]:bounds[r + 1]],
                         strict=True)) for r in range(weights.shape[0])]

    def colbert_scores(self, query_colbert: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """ColBERT scores of passages for a query, computed on the model's device: the
        passages' token vectors never leave it. Padding is masked out, so a score equals
        FlagEmbedding's for the pair on its own."""
        import torch

        texts = list(texts)
        scores = np.zeros(len(texts), np.float32)
        if not texts or len(query_colbert) == 0:
            return scores
        batches = self._forward_batches(texts, self.passage_max_tokens, return_dense=False,
                                        return_sparse=False, return_colbert_vecs=True)
        with torch.inference_mode():
            query = None
            for batch_idx, batch, out in batches:
                vecs = out["colbert_vecs"]
                if query is None:
                    query = torch.as_tensor(query_colbert, device=self.resolved_device,
                                            dtype=vecs.dtype)
                mask = batch["attention_mask"][:, 1:].bool()
                similarity = torch.einsum("qd,btd->bqt", query, vecs).float()
                similarity = similarity.masked_fill(~mask[:, None, :], float("-inf"))
                best = similarity.max(dim=-1).values.sum(dim=-1) / query.shape[0]
                scores[batch_idx] = best.cpu().numpy()
        return scores

    def _forward_batches(self, texts: list[str], max_length: int, *, batch_size: int | None = None,
                         **heads: bool) -> Iterator[tuple[np.ndarray, Any, dict[str, Any]]]:
        """(indices into `texts`, padded batch on the device, model outputs) per batch.

        FlagEmbedding's `encode_single_device` order: tokenise without padding, sort longest
        first (stable), pad per batch, so batches and outputs equal `encode`'s. `heads` are the
        model's `return_dense` / `return_sparse` / `return_colbert_vecs` flags. Iterate it inside
        `torch.inference_mode()`: the forward passes run when the caller asks for the next batch.
        """
        model, device = self.flag_model.model, self.resolved_device
        inputs = self._tokenize(texts, max_length)
        order = np.argsort([-len(item["input_ids"]) for item in inputs], kind="stable")
        size = batch_size or self.batch
        for start in range(0, len(texts), size):
            batch_idx = order[start:start + size]
            batch = self._pad([inputs[i] for i in batch_idx]).to(device)
            yield batch_idx, batch, m3_forward(model, batch, **heads)

    def encode_passages(self, texts: Sequence[str], *, colbert: bool = False,
                        batch_size: int | None = None) -> EncodedBatch:
        return self.encode(texts, max_tokens=self.passage_max_tokens, colbert=colbert,
                           batch_size=batch_size)

    def passage_token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens each passage is encoded with (specials included, truncated as `encode`
        truncates): texts of equal count share a batch without padding, and only then is a
        batch's output bit-identical to encoding each text alone (padding changes the order
        of the attention sums, so the last bits)."""
        texts = list(texts)
        if not texts:
            return []
        return [len(item["input_ids"]) for item in self._tokenize(texts, self.passage_max_tokens)]

    def encode_query(self, text: str, *, colbert: bool = False) -> EncodedBatch:
        return self.encode([text], max_tokens=self.query_max_tokens, colbert=colbert)

    @property
    def dimension(self) -> int:
        return int(self.flag_model.model.model.config.hidden_size)

    def token_length(self, text: str) -> int:
        """Tokens of `text` as bge-m3 counts them (no special tokens): for chunk sizes, budgets."""
        tokenizer = self.flag_model.tokenizer
        with self._tokenizer_lock:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def _pad(self, inputs: list[dict[str, list[int]]]) -> Any:
        from FlagEmbedding.utils.tokenizer_compat import pad_with_compat

        with self._tokenizer_lock:
            return pad_with_compat(self.flag_model.tokenizer, inputs, padding=True,
                                   return_tensors="pt")

    def _tokenize(self, texts: list[str], max_length: int) -> list[dict[str, list[int]]]:
        """Unpadded encodings, one dict per text. Serialised: a fast tokenizer changes its
        truncation settings in place when max_length differs between calls, and threads doing
        that at once (a reindex beside live queries) can fail with "Already borrowed" (a known
        `tokenizers` issue; not reproduced here, and cheap to rule out)."""
        tokenizer = self.flag_model.tokenizer
        with self._tokenizer_lock:
            encoded = tokenizer(texts, truncation=True, max_length=max_length)
        return [{k: encoded[k][i] for k in encoded} for i in range(len(texts))]

    # --- LangChain Embeddings --------------------------------------------------------------------

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode_passages(texts).dense.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode_query(text).dense[0].tolist()


def _fields_from(settings: Settings) -> dict[str, Any]:
    return {field: getattr(settings, name) for field, name in _SETTINGS_FIELDS.items()}


def locate_checkpoint(name_or_path: str) -> Path:
    """A local folder holding the full bge-m3 checkpoint, downloading it when possible.

    Fails fast with `ModelUnavailable` naming KOTAE_EMBEDDING_MODEL and what is wrong: a
    folder that is not there, a file missing from it, a hub id that cannot be fetched. A folder
    without both head files would be silently random-initialised by FlagEmbedding, so it is
    refused here.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _checked_folder(path, name_or_path)
    if path.exists():
        raise ModelUnavailable(
            f"KOTAE_EMBEDDING_MODEL={name_or_path}: that is a file, not a folder. Set it to the "
            f"folder holding the bge-m3 checkpoint ({_CHECKPOINT_FILES}).")
    if looks_like_path(name_or_path):
        raise ModelUnavailable(
            f"KOTAE_EMBEDDING_MODEL={name_or_path}: no such folder ({path.absolute()}). Set "
            f"KOTAE_EMBEDDING_MODEL to the folder holding the bge-m3 checkpoint "
            f"({_CHECKPOINT_FILES}), or to the Hugging Face id BAAI/bge-m3 to download it.")
    return _checked_folder(_download(name_or_path), name_or_path)


def looks_like_path(value: str) -> bool:
    """Whether KOTAE_EMBEDDING_MODEL was meant as a folder rather than a hub id.

    Hub ids are `name` or `org/name`; a value starting like a path, with more than one slash
    (or a Windows separator), or whose first part exists here (`models/bge-m3` beside a
    `models` folder) names a folder, and a missing folder must not be reported as a failed
    download.
    """
    if value in {".", ".."} or value.startswith(("/", "./", "../", "~")):
        return True
    separators = {os.sep, os.altsep} - {None, "/"}
    if any(separator in value for separator in separators) or value.count("/") > 1:
        return True
    parent = Path(value).parent
    return parent != Path(".") and parent.exists()


def _checked_folder(path: Path, setting: str) -> Path:
    """`path` if it holds every file BGEM3FlagModel needs, else the missing ones, named."""
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        missing.append("the model weights (model.safetensors or pytorch_model.bin)")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        missing.append("the tokenizer (tokenizer.json or sentencepiece.bpe.model)")
    heads = [name for name in _HEAD_FILES if not (path / name).is_file()]
    if missing or heads:
        why = (" (without both heads FlagEmbedding would use random sparse and ColBERT weights)"
               if heads else "")
        raise ModelUnavailable(
            f"KOTAE_EMBEDDING_MODEL={setting}: the folder {path} is not a complete bge-m3 "
            f"checkpoint: it lacks {', '.join(missing + heads)}{why}. Point KOTAE_EMBEDDING_MODEL "
            "at a folder holding the full BAAI/bge-m3 checkpoint, or set it to BAAI/bge-m3 to "
            "download it.")
    return path


_CHECKPOINT_PATTERNS = ["*.json", "*.safetensors", "*.pt", "*.model", "*.txt"]


def _snapshot(repo_id: str, *, local_files_only: bool) -> Path:
    """The checkpoint files of `repo_id`, the same patterns for the cache lookup and the
    download: without them the lookup counts files kotae never fetches (README.md, onnx/) as
    missing, and a downloaded model would not load offline."""
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo_id, etag_timeout=10, local_files_only=local_files_only,
                                    allow_patterns=_CHECKPOINT_PATTERNS))
    if not any(folder.glob("*.safetensors")):
        # BAAI/bge-m3 has shipped only pytorch_model.bin at times; asked for only now, so a
        # repository with both never downloads the weights twice. transformers reads a .bin
        # with torch's weights-only loader, not a general unpickler.
        folder = Path(snapshot_download(repo_id, etag_timeout=10,
                                        local_files_only=local_files_only,
                                        allow_patterns=["pytorch_model.bin"]))
    return folder


def _download(repo_id: str) -> Path:
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:  # cached already: no network at all
        return _snapshot(repo_id, local_files_only=True)
    except HFValidationError:
        raise ModelUnavailable(
            f"KOTAE_EMBEDDING_MODEL={repo_id}: no such folder, and not a valid Hugging Face "
            f"model id either. Set it to the folder holding the bge-m3 checkpoint "
            f"({_CHECKPOINT_FILES}), or to BAAI/bge-m3 to download it.") from None
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    if constants.HF_HUB_OFFLINE:  # huggingface_hub's own reading of HF_HUB_OFFLINE
        reason = "HF_HUB_OFFLINE is set and it is not in the local cache"
    else:
        try:
            return _snapshot(repo_id, local_files_only=False)
        except (HfHubHTTPError, OSError, ValueError) as error:
            reason = f"download failed ({type(error).__name__})"
        except Exception as error:  # network stacks raise many types; all mean "not available"
            first_line = next(iter(str(error).splitlines()), "")
            reason = f"download failed ({type(error).__name__}: {first_line})"
    raise ModelUnavailable(
        f"The embedding model '{repo_id}' is not available: {reason}. Set KOTAE_EMBEDDING_MODEL "
        "to a local folder holding the bge-m3 checkpoint (config.json, model.safetensors, "
        "tokenizer files, colbert_linear.pt, sparse_linear.pt), or allow access to the "
        "Hugging Face hub so BAAI/bge-m3 can be downloaded."
    )
