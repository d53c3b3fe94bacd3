"""`python -m llmctl` — the same as the `llmctl` command."""

from llmctl.cli import main

main()
