"""OpenAI error bodies: where a validation error points."""

from __future__ import annotations

from swift.infer.server.errors import field_path


def test_field_paths_leave_out_union_member_tags():
    assert field_path(("body", "messages", 0, "content", "list[TextPart]", 1, "text")) == "messages[0].content[1].text"
    assert field_path(("body", "stream_options", "include_usage")) == "stream_options.include_usage"
    assert field_path(("body", "stop", "function-before[_stop_as_list(), list[str]]", 0)) == "stop[0]"
