"""Go's json.Marshal output for the v2 API bodies (compact, HTML-safe escapes)."""
from __future__ import annotations

from fastkv.api.gojson import go_json_string


def dumps(obj) -> str:
    """Encode dicts (in their key order), lists, str, int, bool and None as Go does."""
    if isinstance(obj, str):
        return go_json_string(obj)
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if obj is None:
        return "null"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(go_json_string(k) + ":" + dumps(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in obj) + "]"
    raise TypeError(f"cannot encode {type(obj).__name__}")
