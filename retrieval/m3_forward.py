"""bge-m3's forward pass, as FlagEmbedding runs it, with the sparse head run per text.

Why: FlagEmbedding's `EncoderOnlyEmbedderM3ModelForInference.forward` applies the sparse head
(a 1024 → 1 linear layer) to the whole batch's hidden states at once. The matrix product's
kernel, and with it the order of its sums, depends on the batch's shape, so a text's token
weights in a batch can differ from its weights alone in the last bit (seen on CPU: 12 of 48
texts of 30 tokens, up to 2.4e-7). Run on each text's own tokens, the head sees the shape it
sees when the text is encoded alone, so the indexer's batches give every chunk the weights it
gets alone, and a chunk's cached vectors never depend on which batch it was in.

Everything else is FlagEmbedding's own code: the transformer body, `_dense_embedding`,
`_colbert_embedding`, `_sparse_embedding` and the normalisation, in forward's order.
"""

from __future__ import annotations

from typing import Any


def m3_forward(model: Any, batch: Any, *, return_dense: bool = True, return_sparse: bool = False,
               return_colbert_vecs: bool = False) -> dict[str, Any]:
    """The outputs `model(batch, ...)` gives (`dense_vecs`, `sparse_vecs` as per-token weights
    of shape batch × tokens × 1, `colbert_vecs`), the sparse weights computed text by text.
    Padding positions get weight 0 (forward gives them the head's output for a pad token,
    which every caller drops with the pad id anyway)."""
    import torch.nn.functional as F

    if not return_sparse:
        return dict(model(batch, return_dense=return_dense, return_sparse=False,
                          return_colbert_vecs=return_colbert_vecs))
    mask = batch["attention_mask"]
    hidden = model.model(**batch, return_dict=True).last_hidden_state
    output: dict[str, Any] = {}
    if return_dense:
        output["dense_vecs"] = model._dense_embedding(hidden, mask)
    lengths = mask.sum(dim=1).tolist()  # bge-m3's tokenizer pads on the right
    weights = hidden.new_zeros(hidden.shape[0], hidden.shape[1], 1)
    for row, length in enumerate(lengths):
        weights[row, :length] = model._sparse_embedding(
            hidden[row:row + 1, :length], batch["input_ids"][row:row + 1, :length],
            return_embedding=False)[0]
    output["sparse_vecs"] = weights
    if return_colbert_vecs:
        output["colbert_vecs"] = model._colbert_embedding(hidden, mask)
    if model.normalize_embeddings:
        for name in ("dense_vecs", "colbert_vecs"):
            if name in output:
                output[name] = F.normalize(output[name], dim=-1)
    return output
