"""``python -m cli``: the ``dr`` command."""

from cli.main import main

main()
