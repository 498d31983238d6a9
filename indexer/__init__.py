"""lampstand.indexer: reserved for its issue; nothing here yet."""

__all__: list[str] = []
