"""L1 adapters bundled with bfs-smr: ``memory`` (embedded L1)."""
