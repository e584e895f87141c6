"""`python -m lmadapt ...` runs the CLI (useful under `accelerate launch -m lmadapt`)."""

from lmadapt.cli import main

main()
