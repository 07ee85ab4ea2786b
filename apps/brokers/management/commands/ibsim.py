"""`manage.py ibsim --port 4002 --accounts DU1000001,DU1000002 --seed 42 [--speed N] [--state FILE]`.

Runs the IB Gateway simulator in the foreground; the options are the simulator's own
(`manage.py ibsim --help`), so that `python -m apps.brokers.ibsim` and this command agree.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.brokers.ibsim import cli


class Command(BaseCommand):
    help = "Run the built-in IB Gateway simulator (TWS API server version 178)."

    def run_from_argv(self, argv: list[str]) -> None:
        cli.main(argv[2:])

    def handle(self, *args: Any, **options: Any) -> None:
        cli.main(list(args))
