"""The deployment bundle (DESIGN §6): ``format`` builds, serialises and parses a bundle's bytes (no
disk), ``rows`` turns checkpoint tables into its seed-table rows, ``index`` is the inference index
stored beside them (what a deployed model looks contexts up in), ``diff`` says what a deploy changes.
Writing a bundle into a directory is ``hasher_resources.deploy.bundle_files``."""

from .diff import BundleDiff, diff_bundles
from .format import (
    BUNDLE_FORMAT,
    FINGERPRINTS_FILE,
    MANIFEST_FILE,
    PAYLOAD_FILES,
    SEEDS_FILE,
    V2_FORMAT,
    Bundle,
    build_bundle,
    bundle_version,
    content_digest,
    header_constants,
    parse_bundle,
    seeds_array,
    slots_array,
)
from .index import INDEX_FILES, InferenceIndex, build_index

__all__ = [
    "BUNDLE_FORMAT",
    "FINGERPRINTS_FILE",
    "INDEX_FILES",
    "MANIFEST_FILE",
    "PAYLOAD_FILES",
    "SEEDS_FILE",
    "V2_FORMAT",
    "Bundle",
    "BundleDiff",
    "InferenceIndex",
    "build_bundle",
    "build_index",
    "bundle_version",
    "content_digest",
    "diff_bundles",
    "header_constants",
    "parse_bundle",
    "seeds_array",
    "slots_array",
]
