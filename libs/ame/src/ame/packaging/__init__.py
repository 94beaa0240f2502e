"""Packing a project directory into a content-addressed version: scan, hash (with a local index), push."""

from ame.packaging.hash_index import HashIndex, default_cache_dir
from ame.packaging.push import PushProgress, PushResult, PushTransport, build_manifest, push_project
from ame.packaging.scan import PackSettings, ProjectTooLarge, Scan, ScannedFile, scan_project

__all__ = [
    "HashIndex",
    "PackSettings",
    "ProjectTooLarge",
    "PushProgress",
    "PushResult",
    "PushTransport",
    "Scan",
    "ScannedFile",
    "build_manifest",
    "default_cache_dir",
    "push_project",
    "scan_project",
]
