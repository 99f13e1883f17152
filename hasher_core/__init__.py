"""DESIGN facts and pure transforms on arrays and bytes: the bottom layer (no other hasher package, no
Dagster, no locks, processes or sockets). See README's Layout."""
