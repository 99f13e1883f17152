"""Entry points: the `hasher` command, the seed-search CLI and `hasher-asic-emulator`; may import anything."""
