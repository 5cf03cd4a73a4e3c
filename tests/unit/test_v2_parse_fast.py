"""v2_keys.parse's shortcut for a form of one plain value gives what the full form
parser gives, and every other form still goes through the full parser."""
from hypothesis import given, settings, strategies as st

from fastkv.api import v2_keys
from fastkv.v2store import V2Error

PIECES = ["value=", "value", "=", "&", ";", "%", "%41", "+", "ttl=5", "prevExist=false", "dir=true",
          "a", "b c", "\u00e9", "", "value=x", "wait=true"]


def _either(fn, *args):
    try:
        return fn(*args)
    except V2Error as e:
        return ("error", e.error_code, e.cause)


@settings(max_examples=400, deadline=None)
@given(method=st.sampled_from(["PUT", "POST", "GET"]),
       path=st.sampled_from(["/v2/keys/a", "/v2/keys/dir/b/", "/v2/keys"]),
       query=st.sampled_from(["", "ttl=5", "value=q"]),
       body=st.lists(st.sampled_from(PIECES), max_size=5).map("".join) | st.text(max_size=20))
def test_shortcut_equals_the_form_parser(method, path, query, body):
    assert _either(v2_keys.parse, method, path, query, body) == \
        _either(v2_keys._parse_form, method, path, query, body)


def test_the_shortcut_is_taken_for_a_plain_value(monkeypatch):
    def refuse(*_a):
        raise AssertionError("full parser used")
    monkeypatch.setattr(v2_keys, "_parse_form", refuse)
    req, no_value = v2_keys.parse("PUT", "/v2/keys/k", "", "value=" + "p" * 64)
    assert req["val"] == "p" * 64 and req["path"] == "/1/k" and no_value is False
