"""The `llmctl` application: global options, and every command in the order `--help` lists them."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

import llmctl
from llmctl.cli.common import OUTPUT
from llmctl.cli.data import app as data_app
from llmctl.cli.models import app as models_app
from llmctl.cli.pipeline import doctor, plan, run, validate
from llmctl.cli.recipes import app as recipes_app
from llmctl.cli.recipes import init, schema
from llmctl.cli.runs import compare, report, runs, show
from llmctl.cli.serve import chat, serve
from llmctl.cli.supervise import run_watched, wanted
from llmctl.errors import exit_code_summary
from llmctl.redaction import forget

app = typer.Typer(
    help="Declarative YAML pipelines for the LLM lifecycle: pretrain → sft → reward → ppo → quantize → benchmark → deploy.",
    epilog=exit_code_summary(),
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},  # sub-commands and groups inherit it
)

for command in (validate, plan, run, schema, init, runs, show, doctor, report, compare, serve, chat):
    app.command()(command)
app.add_typer(recipes_app, name="recipes")
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        print(f"llmctl {llmctl.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks and library logs.")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Machine-readable output (one JSON object per event for `run`).")
    ] = False,
) -> None:
    forget()  # secrets are those of this command's recipe
    OUTPUT.debug = debug or os.environ.get("LLMCTL_DEBUG") == "1"
    OUTPUT.json = json_output
    if not OUTPUT.debug:
        from llmctl.render import quiet_libraries

        quiet_libraries()


GLOBAL_FLAGS = ("--json", "--debug")


def global_flags_first(argv: list[str]) -> list[str]:
    """`llmctl run r.yaml --json` means `llmctl --json run r.yaml`: the global flags may follow the command
    (click only takes them before it). Nothing after a `--` is touched."""
    end = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:end] if a in GLOBAL_FLAGS]
    return flags + [a for a in argv[:end] if a not in GLOBAL_FLAGS] + argv[end:]


def main() -> None:
    """Console-script entry point. SIGTERM is handled like Ctrl-C (exit 130 with the usual line; `run` installs
    its own graceful stop), instead of killing the process silently with 143."""
    import signal

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    args = global_flags_first(sys.argv[1:])
    if wanted(args):  # a run killed by a signal (the OOM killer) is still reported, recorded, notified
        run_watched(lambda: app(args=args, prog_name="llmctl"))
    app(args=args, prog_name="llmctl")
