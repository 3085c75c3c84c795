"""One module per file format, each defining `FORMAT`; `retrieval.loaders.registry` lists them."""
