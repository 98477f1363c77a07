"""`python -m pyexp submit|run|status|cancel|logs|adopt|repair ...`: the console scripts under
one entry point."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    name: f"pyexp.cli.{name}"
    for name in ("submit", "run", "status", "cancel", "logs", "adopt", "repair")
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand's main()."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        print(f"usage: python -m pyexp {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    return importlib.import_module(COMMANDS[args[0]]).main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
