"""The names a user types or reads, each list once: the pipeline's stages, the kernel's backends and
the CPU backend's paths. Settings, resource config, CLI flags, jobs, tests and benchmarks derive their
choices from these. No imports, so the CLI's ``--help`` stays instant.
"""

#: The five stages in order: each is an asset key and a directory under the data directory.
STAGES = ("knowledge_base", "training_frames", "seeds", "checkpoints", "deployment")
#: The stages of one partition; ``deployment`` gathers every partition and runs on its own.
PARTITION_STAGES = STAGES[:4]

#: Where the SHA-256 recursion runs: hashlib (the oracle), Numba on the CPU, CuPy on a GPU.
KERNEL_BACKENDS = ("reference", "cpu", "cuda")
#: How the CPU backend runs it: the x86 SHA extensions, or SIMD code for any CPU.
CPU_PATHS = ("shani", "simd")
#: The choice, for either list, of the fastest one that can run here.
AUTO = "auto"
