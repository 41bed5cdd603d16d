"""Token formats match wherever they stand: next to letters, digits or `_` (no word boundary to slip past), in
file names too; ordinary names with `-sk-` runs stay unmatched."""

from __future__ import annotations

import pytest

from toren_action.core.redact import mask_tokens
from toren_action.guard.policy import scan_text

GH = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
TOKENS = [GH, "github_pat_" + "a1B2" * 14, "sk-ant-oat01-" + "Zx9_" * 8, "sk-proj-" + "Ab3-" * 8, "sk-" + "Q1w2" * 12,
          "AIza" + "B" * 35, "AKIA" + "ABCDEFGHIJKLMNOP", "xoxb-1234567890-abc"]
CONTEXTS = ["{}", "x{}", "{}_", "my_{}", "\u00e9{}", "key_{}x", "{}" + "9" * 300, "{}.txt", "a/{}/b"]


@pytest.mark.parametrize("token", TOKENS, ids=lambda t: t[:8])
@pytest.mark.parametrize("context", CONTEXTS)
def test_a_token_is_found_and_masked_in_any_context(token, context):
    text = context.format(token)
    masked = mask_tokens(text)
    assert token not in masked and token[:12] not in masked.replace("***", "")
    assert [f.rule for f in scan_text("f.txt", [(1, text)], str)] == ["secret-pattern"]


@pytest.mark.parametrize("text", ["disk-usage-report-for-the-quarter-2026-and-more",
                                  "task-runner-configuration-v2-final", "the ASIAN market", "xoxo", "desk-" + "a" * 10])
def test_ordinary_text_is_left_alone(text):
    assert mask_tokens(text) == text and not scan_text("f.txt", [(1, text)], str)
