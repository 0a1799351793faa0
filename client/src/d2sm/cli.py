"""d2sm: try, deploy-check, invoke and operate Detectron2 on SageMaker from the command line.

Every failure is one `error:` line on stderr and exit status 1 (2 for a bad command line, 130 after
Ctrl-C). Each command lives in its own module and adds its own subparser (`add_parser`).
"""

from __future__ import annotations

import argparse
import os
import sys

from . import (
    __version__,
    async_invoke,
    batch,
    bench,
    completion,
    invoke,
    logs,
    progress,
    register,
    results,
    serve,
    show,
    status,
    verify,
    versions,
)
from .aws import DEFAULT_APP_NAME
from .errors import CliError
from .runner import Interrupted

# In --help order. A new command is a module with add_parser(commands, common) that sets `handler`.
COMMANDS = (
    serve,
    invoke,
    async_invoke,
    results,
    batch,
    show,
    bench,
    status,
    verify,
    versions,
    logs,
    register,
    completion,
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad call prints one line instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def add_global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The flags every command takes, before or after its name. The subcommands' copies default to
    SUPPRESS so that a flag given before the subcommand is not reset by the subparser."""

    def default(value):
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--app-name",
        default=default(os.environ.get("D2SM_APP_NAME", DEFAULT_APP_NAME)),
        help="the CDK app's `name`: stacks are <name>-Shared|Realtime|Async|Serverless|Batch (default "
        "$D2SM_APP_NAME or Detectron2)",
    )
    parser.add_argument(
        "--region", default=default(None), help="AWS region (default: the profile's or $AWS_REGION)"
    )
    parser.add_argument("--profile", default=default(None), help="AWS profile")
    parser.add_argument(
        "--max-attempts",
        type=positive(int),
        default=default(5),
        help="attempts per AWS call, first included; throttling and transient errors are retried (default 5)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="one JSON object per result or state line on stdout (messages stay on stderr)",
    )


def parser() -> argparse.ArgumentParser:
    root = OneLineParser(prog="d2sm", description=__doc__.splitlines()[0])
    root.add_argument("--version", action="version", version=f"d2sm {__version__}")
    add_global_options(root, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    add_global_options(common, defaults=False)
    commands = root.add_subparsers(
        dest="command", required=True, parser_class=OneLineParser, metavar="COMMAND"
    )
    for module in COMMANDS:
        module.add_parser(commands, common)
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `register ... -- <packaging flags>`: split by hand, argparse would take them for its own.
    packager_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, packager_args = argv[:split], argv[split + 1 :]
    args = parser().parse_args(argv)
    if packager_args and args.command != "register":
        parser().error(f"only register takes arguments after --, {args.command} does not")
    args.packager_args = packager_args
    progress.set_json(args.json)
    try:
        args.handler(args)
    except Interrupted as error:
        print(f"error: {error}", file=sys.stderr)
        return 130
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `d2sm ... | head`: the reader left; nothing more to say.
        return 1
    except Exception as error:
        # A bug, not the user's mistake: still one line, with what to report; D2SM_DEBUG=1 for the
        # traceback.
        if os.environ.get("D2SM_DEBUG"):
            raise
        print(
            f"error: unexpected {type(error).__name__}: {error} (a d2sm bug: rerun with D2SM_DEBUG=1 and "
            "report the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        progress.set_json(False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
