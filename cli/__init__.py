"""The ``dr`` command line (the top layer: it may import flows, tasks, blocks and the engine)."""
