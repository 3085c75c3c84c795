"""The Milvus backend (KOTAE_STORE=milvus): dense, sparse and docstore in Milvus collections,
versions as views of shared rows, switched by one pointer row (see `schema` and `versions`).

pymilvus is imported when a connection is made, not by importing this package.
"""

from retrieval.stores.milvus.connection import (
    MilvusConfig,
    MilvusError,
    MilvusIncompatible,
    MilvusUnavailable,
)
from retrieval.stores.milvus.versions import MilvusBuild, MilvusVersions

__all__ = [
    "MilvusBuild",
    "MilvusConfig",
    "MilvusError",
    "MilvusIncompatible",
    "MilvusUnavailable",
    "MilvusVersions",
]
