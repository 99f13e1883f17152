"""Stage 2 (DESIGN §3): chunks → neural frames. ``tokens``: the offline, hash-checked cl100k_base;
``gorand``: Go's ``math/rand`` and the 24 × 768 projection; ``windows``: windows, the slot mapper and
one batch's frames. The streaming writer is ``hasher_resources.frames_writer``."""
