"""The `humwatch` command line. Every command is a thin call into the library (:mod:`humwatch.commands`);
every user error is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import List, Optional

import typer

from humwatch.commands import MODULES
from humwatch.errors import HumwatchError

app = typer.Typer(
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # click's plain help: rich's option tables cut long option names ("--threshold-me…") at 80 columns
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="humwatch: tell from a machine's sound whether it is healthy. Every error is one line `error: ...` "
    "and exit status 2; `humwatch score` exits 1 when a recording raises an alarm.",
)


def _version(value: bool) -> None:
    if value:
        from humwatch._version import __version__

        typer.echo(f"humwatch {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """humwatch: tell from a machine's sound whether it is healthy."""


for _name in MODULES:
    importlib.import_module(f"humwatch.commands.{_name}").register(app)


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: run the app; every user error (a wrong option as much as a bad file) is one line
    ``error: ...`` on stderr and exit status 2, never a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 are printed as their own bytes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    try:
        code = app(args=argv, prog_name="humwatch", standalone_mode=False)
    except typer.Exit as e:  # --help, --version and typer.Exit(n)
        code = e.exit_code
    except typer.TyperException as e:  # usage errors: unknown option, bad choice, missing argument
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare `humwatch` or group: the help, as asked for
            e.show()
            code = 0
        else:
            message = e.format_message() if hasattr(e, "format_message") else str(e)
            print(f"error: {' '.join(message.split())}", file=sys.stderr)
            code = 2
    except HumwatchError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
