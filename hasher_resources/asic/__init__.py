"""The ASIC device side (DESIGN §7): the byte-stream reader, the session, the board and emulated
resources, the emulator and cross-hardware validation. The packet codec is ``hasher_core.asic_codec``
and the errors are ``hasher_core.errors``' ``AsicError`` family.

Importing this package imports nothing else; the submodules that need Dagster import it.
"""
