"""The three collections of one kotae index in Milvus, and the expressions that read them.

    <prefix>_chunks  one row per chunk: row id (INT64 primary key), born, died, dense
                     (FLOAT_VECTOR, IP), sparse (SPARSE_FLOAT_VECTOR: bge-m3's own lexical
                     weights, IP, exact inverted index), text, the citation fields (source,
                     title, heading path, chunk number, hashes, URL) and the whole metadata
    <prefix>_files   one row per indexed file (the content hash an incremental run compares)
    <prefix>_meta    key/value rows: the served-version pointer, version records and their
                     manifests, open builds, the model and dimension (Milvus needs a vector
                     field in every collection: a 2-d dummy)

Versions share rows. A row carries `born`, the build that inserted it, and `died`, the build
that deleted it (DIED_NEVER while alive); version (floor, build) sees the rows with
`floor <= born <= build and died > build`. A build that edits the served version takes its
floor, so an incremental reindex inserts only the chunks of changed files; a build from
nothing (`--full`, a migration) has its own number as floor.

Row ids are `build << 32 | n`: unique and increasing without a shared counter (one build at a
time holds the index lock). Strings are never put in an expression: Milvus' parser has no
escape for a newline, which a file name may hold. `source_key` / `chunk_key` columns hold a
64-bit hash that expressions compare, and the string is checked after reading.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrieval.stores.milvus.connection import Milvus

CHUNKS, FILES, META = "chunks", "files", "meta"
DIED_NEVER = 2**62
ROW_BITS = 32
MAX_TEXT_BYTES = 65_535  # Milvus' VARCHAR limit
META_PIECE = 60_000  # characters of ASCII-only JSON per meta row (under the VARCHAR limit)
DUMMY_VECTOR = [1.0, 0.0]
SCHEMA_VERSION = 1

# Dense index build and search parameters by KOTAE_MILVUS_INDEX_TYPE. FLAT is exact (the same
# candidates as the local FAISS flat index); HNSW and GPU_CAGRA are for standalone / clusters
# and need their search parameters grown with the number of candidates asked for.
INDEX_BUILD_PARAMS: dict[str, dict[str, Any]] = {
    "FLAT": {},
    "AUTOINDEX": {},
    "IVF_FLAT": {"nlist": 128},
    "IVF_SQ8": {"nlist": 1024},
    "GPU_IVF_FLAT": {"nlist": 1024},
    "HNSW": {"M": 16, "efConstruction": 200},
    "GPU_CAGRA": {"intermediate_graph_degree": 64, "graph_degree": 32,
                  "build_algo": "IVF_PQ", "cache_dataset_on_device": "true",
                  "adapt_for_cpu": "false"},
}


def dense_search_params(index_type: str, limit: int) -> dict[str, Any]:
    """Search parameters for `limit` candidates (HNSW's ef and CAGRA's itopk must reach it)."""
    params: dict[str, Any] = {}
    if index_type in ("IVF_FLAT", "IVF_SQ8", "GPU_IVF_FLAT"):
        params = {"nprobe": 32}
    elif index_type == "HNSW":
        params = {"ef": max(128, 2 * limit)}
    elif index_type == "GPU_CAGRA":
        params = {"itopk_size": max(128, -(-2 * limit // 32) * 32), "search_width": 4}
    return {"metric_type": "IP", "params": params}


SPARSE_SEARCH_PARAMS = {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}  # exact


def row_id(build: int, n: int) -> int:
    return (build << ROW_BITS) | n


def key64(text: str) -> int:
    """A signed 64-bit hash of `text` (what expressions compare instead of the string)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(),
                          "big", signed=True)


def visible(floor: int, build: int) -> str:
    return f"born >= {floor} and born <= {build} and died > {build}"


def unseen_by(floor: int, build: int) -> str:
    """`not visible(floor, build)`, spelled without `not` (Milvus Lite's delete refuses it)."""
    return f"(born < {floor} or born > {build} or died <= {build})"


def in_list(field: str, values: Iterable[int]) -> str:
    return f"{field} in [{', '.join(str(int(v)) for v in values)}]"


def _chunks_schema(client: Any, dim: int) -> Any:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("born", DataType.INT64)
    schema.add_field("died", DataType.INT64)
    schema.add_field("chunk_key", DataType.INT64)
    schema.add_field("source_key", DataType.INT64)
    schema.add_field("chunk_id", DataType.VARCHAR, max_length=1024)
    schema.add_field("source", DataType.VARCHAR, max_length=4096)
    schema.add_field("title", DataType.VARCHAR, max_length=4096)
    schema.add_field("heading_path", DataType.VARCHAR, max_length=8192)  # a JSON list
    schema.add_field("chunk_number", DataType.INT64)
    schema.add_field("file_hash", DataType.VARCHAR, max_length=128)
    schema.add_field("content_hash", DataType.VARCHAR, max_length=128)
    schema.add_field("url", DataType.VARCHAR, max_length=4096)
    schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    return schema


def _files_schema(client: Any) -> Any:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("born", DataType.INT64)
    schema.add_field("died", DataType.INT64)
    schema.add_field("source_key", DataType.INT64)
    schema.add_field("source", DataType.VARCHAR, max_length=4096)
    schema.add_field("file_hash", DataType.VARCHAR, max_length=128)
    schema.add_field("mtime", DataType.DOUBLE)
    schema.add_field("title", DataType.VARCHAR, max_length=4096)
    schema.add_field("chunk_count", DataType.INT64)
    schema.add_field("indexed_at", DataType.DOUBLE)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=len(DUMMY_VECTOR))
    return schema


def _meta_schema(client: Any) -> Any:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("kind", DataType.VARCHAR, max_length=32)
    schema.add_field("build", DataType.INT64)
    schema.add_field("part", DataType.INT64)
    schema.add_field("parts", DataType.INT64)
    schema.add_field("value", DataType.VARCHAR, max_length=65_535)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=len(DUMMY_VECTOR))
    return schema


def _scalar_indexes(params: Any, fields: Iterable[str]) -> None:
    for field in fields:
        params.add_index(field, index_type="INVERTED")


def create_meta(milvus: Milvus) -> None:
    """The meta collection alone (what the index's identity needs before a first build)."""
    if not milvus.has(META):
        params = milvus.client.prepare_index_params()
        params.add_index("vec", index_type="FLAT", metric_type="IP")
        milvus.create(META, _meta_schema(milvus.client), params)
        milvus.load(META)


def create_missing(milvus: Milvus, dim: int) -> None:
    """Create whichever of the three collections does not exist yet (idempotent: a crash
    between two creations is finished by the next build). Milvus Lite spends ~0.5 s per
    index it creates: meta and files have only their dummy vector's."""
    client = milvus.client
    create_meta(milvus)
    if not milvus.has(FILES):
        params = client.prepare_index_params()
        params.add_index("vec", index_type="FLAT", metric_type="IP")
        milvus.create(FILES, _files_schema(client), params)
    if not milvus.has(CHUNKS):
        index_type = milvus.config.index_type
        params = client.prepare_index_params()
        params.add_index("dense", index_type=index_type, metric_type="IP",
                         params=INDEX_BUILD_PARAMS.get(index_type, {}))
        params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        # born/died filters cost nothing measurable unindexed at 50k rows; lookups by key do
        _scalar_indexes(params, ["chunk_key", "source_key"])
        milvus.create(CHUNKS, _chunks_schema(client, dim), params)
