"""The pure core: decisions from data. Nothing here does I/O, reads the clock
or imports git, kubernetes or an HTTP client (tests/test_layers.py checks)."""
