"""The `llmctl` command line: one module per command group (pipeline, runs, recipes, models, data, serve), each
parsing arguments, calling `llmctl.api`, printing and mapping errors to exit codes; `app` puts them together.

Exit codes: llmctl.errors.EXIT_CODES. Errors are one readable block on stderr; `--debug` adds the traceback.
"""

from llmctl.cli.app import app, global_flags_first, main

__all__ = ["app", "global_flags_first", "main"]
