"""The indexer's machinery: the embedding cache (chunk-level reuse, resumable builds) and the
streaming pipeline that cuts chunks from many files into length-bucketed batches."""
