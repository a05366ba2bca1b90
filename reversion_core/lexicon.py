"""The relation lexicon: the paper's 56 basis prepositions (Table A4) and the words that are never negatives."""
from __future__ import annotations

# Table A4 of the ReVersion paper, in the paper's order (read column by column).
BASIS_PREPOSITIONS: tuple[str, ...] = (
    "aboard", "about", "above", "across", "after", "against", "along", "alongside", "amid", "amidst",
    "among", "amongst", "anti", "around",
    "astride", "at", "atop", "before", "behind", "below", "beneath", "beside", "between", "beyond",
    "by", "down", "following", "from",
    "in", "including", "inside", "into", "near", "of", "off", "on", "onto", "opposite",
    "out", "outside", "over", "past",
    "regarding", "round", "through", "throughout", "to", "toward", "towards", "under", "underneath", "up",
    "upon", "versus", "with", "within",
)
assert len(BASIS_PREPOSITIONS) == 56 and len(set(BASIS_PREPOSITIONS)) == 56
