"""Everything with a file, lock, process, device or socket: the kernel, the ASIC, the embedder, the
stores and the IO manager. May import ``hasher_core`` only."""
