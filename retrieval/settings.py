"""The one reader of the environment (and `.env`) for retrieval and answering.

Project settings use the `KOTAE_` prefix; OpenAI settings keep their standard names.
Everything else receives a `Settings` (or what it needs from one) as an argument.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from retrieval.errors import SettingsInvalid
from retrieval.types import RetrievalMode

BUNDLED_SAMPLES = Path(__file__).resolve().parent.parent / "kotae" / "samples"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KOTAE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        env_ignore_empty=True,  # `KEY=` in .env means "use the default"
    )

    # --- embeddings (bge-m3 through FlagEmbedding) ---
    embedding_model: str = Field(
        "BAAI/bge-m3", description="Hugging Face model id or local folder of a bge-m3 checkpoint"
    )
    embedding_device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    embedding_fp16: bool | None = Field(
        None, description="half precision; default: on for cuda, off for cpu"
    )
    embedding_batch_size: int | None = Field(
        None, ge=1, description="texts per forward pass; default: 16 on cpu, 64 on cuda")
    embedding_cpu_threads: int | None = Field(
        None, ge=1, description="torch CPU threads; default: torch's choice (all cores)")
    passage_max_tokens: int = Field(512, ge=16, le=8192)
    query_max_tokens: int = Field(128, ge=8, le=8192)

    # --- documents and index ---
    docs_dir: Path = Field(BUNDLED_SAMPLES, description="what `kotae index` reads by default")
    index_dir: Path = Field(Path(".kotae/index"), description="where index versions live")
    chunk_size: int = Field(400, ge=32, description="chunk size in bge-m3 tokens")
    chunk_overlap: int = Field(60, ge=0, description="overlap between chunks in bge-m3 tokens")
    faiss_device: Literal["auto", "cpu", "cuda"] = "auto"
    dense_index: Literal["auto", "flat", "ivf"] = Field(
        "auto", description="local backend's dense index per segment: auto (exact flat below "
        "KOTAE_IVF_MIN_CHUNKS chunks, IVF from there) | flat (always exact) | ivf")
    ivf_min_chunks: int = Field(100_000, ge=1, description="auto: segments this large get IVF")
    ivf_nprobe: int = Field(
        32, ge=1, description="IVF cells a query scans: higher = better recall, slower")
    ivf_lists: int | None = Field(
        None, ge=1, description="IVF cells of a new segment; default about 4 x sqrt(chunks)")
    reindex_interval: float | None = Field(
        None, gt=0, description="kotae serve refreshes the index this often: 1h, 30m, 90s, "
        "1h30m or seconds; unset = never")

    # --- index backend (retrieval.stores) ---
    store: Literal["local", "milvus"] = Field(
        "local", description="local (FAISS + SQLite under KOTAE_INDEX_DIR) | milvus "
                             "(KOTAE_MILVUS_URI)")
    milvus_uri: str | None = Field(
        None, description="a file path ending in .db: Milvus Lite inside this process; "
        "http://host:19530: Milvus standalone or a cluster; default: <KOTAE_INDEX_DIR>/milvus.db")
    milvus_token: SecretStr | None = Field(None, description="user:password or an API key")
    milvus_db: str = Field("default", description="the Milvus database")
    milvus_collection: str = Field(
        "kotae", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$",
        description="prefix of the collections <prefix>_chunks, <prefix>_files, <prefix>_meta")
    milvus_index_type: Literal["FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "AUTOINDEX", "GPU_CAGRA",
                               "GPU_IVF_FLAT"] = Field(
        "FLAT", description="dense index, fixed when the collections are created: FLAT "
        "(exact, the default; Milvus Lite takes FLAT, IVF_FLAT, AUTOINDEX) | HNSW (standalone "
        "or cluster, past ~1M chunks) | GPU_CAGRA (GPU clusters) | IVF_FLAT | IVF_SQ8 | "
        "GPU_IVF_FLAT | AUTOINDEX")

    # --- retrieval ---
    retrieval_mode: RetrievalMode | None = Field(
        None, description="dense | sparse | hybrid | all; default: all on GPU, hybrid on CPU"
    )
    hybrid_weights: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [0.4, 0.2, 0.4],
        description="weights of dense, sparse, colbert scores: 0.4,0.2,0.4 or [0.4,0.2,0.4]",
    )
    top_k: int = Field(5, ge=1)
    candidates: int = Field(50, ge=1, description="dense top-N and sparse top-N before rescoring")
    rerank_candidates: int = Field(
        20, ge=1, description="mode all: the best N hybrid candidates get a ColBERT score")
    min_score: float = Field(
        0.0, description="hits whose combined score is below this count as 'nothing relevant'"
    )

    # --- answering (any OpenAI-compatible chat endpoint) ---
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key")
    )
    openai_base_url: str | None = Field(
        None, validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url")
    )
    chat_model: str = "gpt-4o-mini"
    chat_temperature: float = 0.1
    chat_timeout: float = Field(30.0, gt=0, description="seconds per chat request")
    chat_max_retries: int = Field(2, ge=0)
    context_token_budget: int = Field(3000, ge=200, description="tokens of sources in a prompt")
    prompts_dir: Path | None = Field(None, description="folder overriding the bundled prompts")

    # --- access control ---
    access_file: Path | None = Field(
        None, description="TOML file of document sets and who may read them; unset: every "
                          "indexed document is visible everywhere")

    # --- shared state of several replicas (Redis; unset: in-process, one machine) ---
    redis_url: SecretStr | None = Field(
        None, description="redis://[:password@]host:6379/0 — event dedupe, the reindex lock "
                          "and feedback shared by every replica; unset: kept in-process")
    redis_prefix: str = Field(
        "kotae:", description="prefix of every Redis key (deployments can share one Redis)")
    redis_lock_ttl_s: float = Field(
        30.0, gt=0, description="the reindex lock in Redis expires this long after its holder "
                                "stops renewing it (a crashed indexer)")

    @field_validator("reindex_interval", mode="before")
    @classmethod
    def _parse_interval(cls, value: object) -> object:
        if not isinstance(value, str) or not value.strip():
            return value
        return parse_interval(value)

    @field_validator("hybrid_weights", mode="before")
    @classmethod
    def _parse_weights(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [
                float(part) for part in text.split(",")]
        except ValueError:
            raise ValueError(_WEIGHTS_HELP) from None

    @field_validator("hybrid_weights")
    @classmethod
    def _three_weights(cls, weights: list[float]) -> list[float]:
        if len(weights) != 3 or any(w < 0 for w in weights) or sum(weights) == 0:
            raise ValueError(_WEIGHTS_HELP)
        return weights


_INTERVAL = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
                       r"(?:(\d+(?:\.\d+)?)s?)?")


def parse_interval(text: str) -> float:
    """Seconds in `1h`, `30m`, `1h30m`, `90s`, `2d` or a bare number of seconds."""
    match = _INTERVAL.fullmatch(text.strip().lower().replace(" ", ""))
    if not match or not any(match.groups()):
        raise ValueError(f"KOTAE_REINDEX_INTERVAL={text!r}: use a duration such as 1h, 30m, "
                         "1h30m, 90s or a number of seconds")
    days, hours, minutes, seconds = (float(part or 0) for part in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


_WEIGHTS_HELP = ("KOTAE_HYBRID_WEIGHTS needs three non-negative numbers (dense, sparse, "
                 "colbert), e.g. 0.4,0.2,0.4")
_SECRET_HINTS = ("token", "key", "secret", "password")
AnySettings = TypeVar("AnySettings", bound=BaseSettings)


def load_settings(cls: type[AnySettings]) -> AnySettings:
    """`cls()` from the environment and `.env`; a bad value raises SettingsInvalid naming the
    variable and what it accepts (never echoing a secret), instead of pydantic's report."""
    try:
        return cls()
    except ValidationError as error:
        problems = [_describe(cls, str(e["loc"][0]) if e["loc"] else "?", e["msg"],
                              e.get("input")) for e in error.errors()]
        raise SettingsInvalid("; ".join(problems)) from None
    except SettingsError as error:  # a value that had to be JSON and was not
        match = re.search(r'field "([^"]+)"', str(error))
        name = match.group(1) if match else "?"
        raise SettingsInvalid(_describe(cls, name, "not valid JSON", None)) from None


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets `field` (its alias, else prefix + NAME)."""
    info = cls.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    prefix = cls.model_config.get("env_prefix", "")
    return f"{prefix}{field}".upper()


def _describe(cls: type[BaseSettings], field: str, message: str, given: object) -> str:
    name = env_name(cls, field)
    message = message.removeprefix("Value error, ")
    if message.startswith(name):  # our own validators already name the variable
        return message
    shown = "" if given is None or any(h in field for h in _SECRET_HINTS) else f"={given!r}"
    info = cls.model_fields.get(field)
    accepts = f" ({info.description})" if info and info.description else ""
    return f"{name}{shown}: {message[:1].lower() + message[1:]}{accepts}"
