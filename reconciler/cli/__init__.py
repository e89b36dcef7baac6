"""The ``sluice`` command line: argument parsing and output only."""
