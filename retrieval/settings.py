"""The one reader of the environment (and `.env`) for retrieval and answering.

Project settings use the `KOTAE_` prefix; OpenAI settings keep their standard names.
Everything else receives a `Settings` (or what it needs from one) as an argument.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    # --- retrieval ---
    retrieval_mode: RetrievalMode | None = Field(
        None, description="dense | sparse | hybrid | all; default: all on GPU, hybrid on CPU"
    )
    hybrid_weights: list[float] = Field(
        default_factory=lambda: [0.4, 0.2, 0.4],
        description="weights of dense, sparse, colbert scores",
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

    @field_validator("hybrid_weights")
    @classmethod
    def _three_weights(cls, weights: list[float]) -> list[float]:
        if len(weights) != 3 or any(w < 0 for w in weights) or sum(weights) == 0:
            raise ValueError(
                "KOTAE_HYBRID_WEIGHTS needs three non-negative numbers, e.g. [0.4,0.2,0.4]")
        return weights
