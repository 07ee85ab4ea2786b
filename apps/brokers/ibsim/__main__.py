"""``python -m apps.brokers.ibsim``: see `apps.brokers.ibsim.cli`."""

from apps.brokers.ibsim.cli import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    main()
