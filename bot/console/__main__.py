"""Run the team console, or create a team member: `python -m bot.console serve|create-member|set-password`."""
from __future__ import annotations

import argparse
import getpass
import logging
import sys
from typing import List, Optional, TextIO

from bot.groups import TeamInputError

EXIT_BAD_INPUT = 2


def read_password(password_file: Optional[str], stdin: TextIO) -> str:
    """The new password: from a file's first line, typed twice at a terminal, or a line of piped input."""
    if password_file:
        with open(password_file, encoding="utf-8") as handle:
            return handle.readline().rstrip("\r\n")
    if stdin.isatty():
        first = getpass.getpass("New password (at least 12 characters): ")
        if getpass.getpass("The same password again: ") != first:
            raise TeamInputError("The two passwords were different; nothing was changed.")
        return first
    return stdin.readline().rstrip("\r\n")


def build_parser() -> argparse.ArgumentParser:
    """The command line: serve (the default), create-member and set-password."""
    parser = argparse.ArgumentParser(prog="python -m bot.console", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the console on CONSOLE_HOST:CONSOLE_PORT (default 127.0.0.1:8001)")
    for name, what in (("create-member", "add a team member who can sign in"),
                       ("set-password", "give a team member a new password (signs them out everywhere)")):
        command = commands.add_parser(name, help=what)
        command.add_argument("username")
        command.add_argument("--password-file", help="read the password from this file's first line")
    return parser


def main(argv: Optional[List[str]] = None, stdin: TextIO = sys.stdin) -> int:
    """Run the command; 0 on success, 2 on unusable input."""
    from bot.settings import load_settings

    args = build_parser().parse_args(argv)
    settings = load_settings()
    if args.command in (None, "serve"):
        from aiohttp import web

        from bot.console.app import build_app

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # no query strings (filters) in logs
        print(f"team console on http://{settings.console_host}:{settings.console_port}", flush=True)
        web.run_app(build_app(settings), host=settings.console_host, port=settings.console_port, print=None)
        return 0

    from bot.console.app import accounts_for
    from bot.db import make_engine, make_session_factory, migrate

    try:
        password = read_password(args.password_file, stdin)
        migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            accounts = accounts_for(settings, make_session_factory(engine))
            if args.command == "create-member":
                accounts.create_member(args.username, password)
                print(f"Team member {args.username.strip().lower()!r} can now sign in to the console.")
            else:
                accounts.set_password(args.username, password)
                print(f"New password set for {args.username.strip().lower()!r}; their old sessions are closed.")
        finally:
            engine.dispose()
    except (TeamInputError, OSError) as problem:
        print(f"Not done: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
