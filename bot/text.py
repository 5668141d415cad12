"""Cleaning what people type, the same way on every channel and in the team's tools."""
from __future__ import annotations

import re
import unicodedata


def clean_text(text: str, *, multiline: bool = True) -> str:
    """text without control characters (newlines and tabs kept when multiline), trimmed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char in "\n\t":
            kept.append(char if multiline else " ")
        elif category in ("Cc", "Cs"):  # control characters, and lone surrogates from bad bytes
            continue
        else:
            kept.append(char)
    cleaned = "".join(kept)
    if not multiline:
        cleaned = re.sub(r"\s+", " ", cleaned)
    return cleaned.strip()
