"""lampstand's command line (`lampstand ...`) and client helpers."""

__all__: list[str] = []
