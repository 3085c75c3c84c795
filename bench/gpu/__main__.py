"""`python -m bench.gpu`."""

from bench.gpu.cli import main

main()
