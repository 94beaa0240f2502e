"""Write spec data back as YAML that the loader reads again (``ame task view``)."""

from __future__ import annotations

import io
from typing import Any

from ame.spec.resolved import TaggedMapping


def to_yaml(data: Any) -> str:
    """Block-style YAML in insertion order, with :class:`TaggedMapping` written as ``!tag``."""
    import ruamel.yaml

    yaml = ruamel.yaml.YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.width = 100
    yaml.indent(mapping=2, sequence=4, offset=2)  # the docs' style: "  - name: ..."

    def represent_tagged(representer: Any, value: TaggedMapping) -> Any:
        return representer.represent_mapping("!" + value.tag, dict(value))

    yaml.representer.add_representer(TaggedMapping, represent_tagged)
    stream = io.StringIO()
    yaml.dump(data, stream)
    return stream.getvalue()
