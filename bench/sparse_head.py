"""Whether a text's embedding depends on the batch it was encoded in: one unpadded batch of
equal-length texts, each text's views compared bit for bit with the text encoded alone.

Side by side in the same run:
- ours: `BGEM3Embeddings.encode` (the sparse head run text by text, `retrieval/m3_forward.py`);
- baseline: `BGEM3FlagModel.encode` over the same batch (the sparse head over the whole batch).

"Alone" is `BGEM3FlagModel.encode([text])`. The indexer encodes batches like these (chunks of
one token count from many files), so a difference here is a chunk whose cached weights depend
on which other chunks shared its batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.common import (
    BGE_M3_ARCH_DIR,
    TINY_DIR,
    BenchRun,
    bench_parser,
    comma_ints,
    ensure_model,
    flag_lexical,
    publish,
    quiet_model_loading,
    set_threads,
    table,
)

WORDS = ["kotae", "answers", "questions", "from", "documents", "経費", "精算", "の", "締め切り",
         "は", "毎月", "25日", "です", "領収書", "FAISS", "dense", "sparse", "lexical", "weights",
         "on-call", "handoff", "Monday", "10:00", "JST", "会議室", "予約"]


def compare(embeddings: Any, count: int, tokens: int, rng: random.Random) -> list[object]:
    """One batch of `count` texts cut to `tokens` tokens: how many of its texts differ from
    the text alone, ours and FlagEmbedding's."""
    texts = [" ".join(rng.choice(WORDS) for _ in range(tokens * 2)) for _ in range(count)]
    assert min(embeddings.passage_token_counts(texts)) >= tokens  # one unpadded batch
    ours = embeddings.encode(texts, max_tokens=tokens, batch_size=count)
    flag = embeddings.flag_model.encode(texts, batch_size=count, max_length=tokens,
                                        return_dense=True, return_sparse=True)
    ours_dense = ours_sparse = flag_dense = flag_sparse = 0
    worst = 0.0
    for i, text in enumerate(texts):
        alone = embeddings.flag_model.encode([text], max_length=tokens, return_dense=True,
                                             return_sparse=True)
        alone_sparse = flag_lexical(alone["lexical_weights"][0])
        ours_dense += not np.array_equal(ours.dense[i], alone["dense_vecs"][0])
        flag_dense += not np.array_equal(flag["dense_vecs"][i], alone["dense_vecs"][0])
        ours_sparse += ours.sparse[i] != alone_sparse
        theirs = flag_lexical(flag["lexical_weights"][i])
        flag_sparse += theirs != alone_sparse
        if theirs.keys() == alone_sparse.keys():
            worst = max([worst] + [abs(theirs[t] - w) for t, w in alone_sparse.items()])
    return [f"{count} × {tokens}", f"{ours_dense} / {ours_sparse}",
            f"{flag_dense} / {flag_sparse}", f"{worst:.1e}"]


def run(model: str, shapes: Sequence[tuple[int, int]], threads: int) -> str:
    from retrieval.embeddings import BGEM3Embeddings

    set_threads(threads)
    embeddings = BGEM3Embeddings(model_name_or_path=model, device="cpu", batch_size=64,
                                 passage_max_tokens=512)
    rng = random.Random(7)
    rows = []
    for count, tokens in shapes:
        print(f"  {count} texts of {tokens} tokens", flush=True)
        rows.append(compare(embeddings, count, tokens, rng))
    return table(["batch (texts × tokens)", "ours: dense / sparse differing from alone",
                  "BGEM3FlagModel.encode: dense / sparse differing from alone",
                  "encode's largest sparse difference"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("bench.sparse_head", __doc__)
    parser.add_argument("--quick", action="store_true", help="tiny model")
    parser.add_argument("--shapes", default="48x30,16x128,8x256",
                        help="batches as TEXTSxTOKENS, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    quiet_model_loading()
    bench = BenchRun("bench.sparse_head", argv)
    model = ensure_model(TINY_DIR, "TINY") if args.quick else ensure_model(BGE_M3_ARCH_DIR,
                                                                            "BGE_M3")
    shapes = [tuple(comma_ints(shape.replace("x", ","))) for shape in args.shapes.split(",")]
    body = run(str(model), [(s[0], s[1]) for s in shapes], args.threads)
    kind = "tiny random-weight model" if args.quick else "bge-m3 architecture, random weights"
    markdown = "\n\n".join([
        bench.heading("A text's embedding in a batch vs alone"), bench.machine_now(),
        f"Model: {kind}, CPU, {args.threads} torch threads. Each row is one batch of texts "
        "cut to the same token count (no padding); every text is compared bit for bit with "
        "`BGEM3FlagModel.encode([text])`.", body])
    publish(markdown, None if args.no_write else args.section or "sparse-head")


if __name__ == "__main__":
    main()
