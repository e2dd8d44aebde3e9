"""``the0``: the command-line client, built only on ``The0Client`` (docs/cli.md).

``main`` runs one command and turns every failure into one line on stderr and an exit code
(``failures``): never a traceback.
"""

from __future__ import annotations

import sys

import typer

from the0.client.cli import failures, runtime
from the0.client.cli.app import root
from the0.client.errors import The0Error

# Options of the root command that people also put after the subcommand (`the0 bots list --url X`).
GLOBAL_OPTIONS = ("--url", "--profile", "--output")


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move the global options (and their values) in front of the command, wherever they were typed."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            rest.extend(argv[index:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            if "=" in arg or index + 1 >= len(argv):
                front.append(arg)
            else:
                front.extend(argv[index : index + 2])
                index += 1
        else:
            rest.append(arg)
        index += 1
    return front + rest


def main(argv: list[str] | None = None) -> int:
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    command = typer.main.get_command(root)
    try:
        result = command.main(args, prog_name="the0", standalone_mode=False)
        if result == failures.INTERRUPTED:  # Typer turns Ctrl-C into this exit code, silently
            return _fail("interrupted", failures.INTERRUPTED)
        return result if isinstance(result, int) else failures.OK
    except typer.Exit as done:
        return int(done.exit_code)
    except typer.TyperException as error:  # a usage error, from Typer's (vendored) Click
        context = getattr(error, "ctx", None)
        where = context.command_path if context is not None else "the0"
        return _fail(f"{error.format_message()} — see `{where} --help`", int(error.exit_code) or failures.USAGE)
    except (typer.Abort, KeyboardInterrupt):
        return _fail("interrupted", failures.INTERRUPTED)
    except failures.CliError as error:
        return _fail(str(error), error.exit_code)
    except The0Error as error:
        line, code = failures.describe(error, target=runtime.current().url)
        return _fail(line, code)
    except BrokenPipeError:  # `the0 ... | head`
        return failures.OK
    except OSError as error:
        return _fail(f"{getattr(error, 'filename', None) or ''} {error.strerror or error}".strip(), failures.ERROR)
    finally:
        runtime.current().close()


def _fail(text: str, code: int) -> int:
    print(f"the0: {failures.one_line(text)}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
