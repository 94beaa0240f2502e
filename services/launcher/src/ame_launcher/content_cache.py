"""The launcher's content cache is `ame.content_cache`: `ame task run -l` places data sets from the same code."""

from ame.content_cache import ContentCache, MaterialiseError, Placed, Placement

__all__ = ["ContentCache", "MaterialiseError", "Placed", "Placement"]
