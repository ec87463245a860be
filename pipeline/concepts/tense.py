"""``tense``: the same sentence in the past and in the present tense.

Subject x verb phrase; verb forms are written out (base, third person singular, past)
so irregular verbs are right and the pair differs only in the verb's tense.
"""

from __future__ import annotations

import random

from pipeline.concepts._text import cap

# (mid-sentence form, plural?)
SUBJECTS = (
    ("my neighbour", False), ("the teacher", False), ("Anna", False), ("the old man", False),
    ("my sister", False), ("David", False), ("the nurse", False), ("our manager", False),
    ("the students", True), ("my parents", True), ("we", True), ("they", True),
)
# (base, third person singular, past, rest of the phrase); no verb whose past equals its base.
VERBS = (
    ("walk", "walks", "walked", "to the station"), ("write", "writes", "wrote", "a long letter"),
    ("eat", "eats", "ate", "breakfast in the kitchen"), ("drink", "drinks", "drank", "a cup of tea"),
    ("play", "plays", "played", "the piano"), ("cook", "cooks", "cooked", "dinner for the family"),
    ("drive", "drives", "drove", "to work"), ("buy", "buys", "bought", "fresh bread"),
    ("sing", "sings", "sang", "in the choir"), ("teach", "teaches", "taught", "a small class"),
    ("clean", "cleans", "cleaned", "the windows"), ("paint", "paints", "painted", "the fence"),
    ("build", "builds", "built", "a wooden shelf"), ("watch", "watches", "watched", "the news"),
    ("fix", "fixes", "fixed", "the broken chair"), ("speak", "speaks", "spoke", "to the neighbours"),
    ("swim", "swims", "swam", "in the lake"), ("find", "finds", "found", "an old coin"),
    ("carry", "carries", "carried", "the heavy boxes"), ("visit", "visits", "visited", "the museum"),
    ("bring", "brings", "brought", "flowers"), ("catch", "catches", "caught", "the early train"),
    ("wear", "wears", "wore", "a blue coat"), ("sell", "sells", "sold", "vegetables at the market"),
    ("forget", "forgets", "forgot", "the keys"), ("run", "runs", "ran", "along the river"),
    ("open", "opens", "opened", "the shop"), ("grow", "grows", "grew", "tomatoes in the garden"),
)
# {S}/{s}: subject, {v}: verb, {r}: rest. No frame names a time, so only the verb marks tense.
FRAMES = ("{S} {v} {r}.", "{S} quietly {v} {r}.", "I think {s} {v} {r}.", "{S} {v} {r} with a smile.")

NEUTRAL = (
    "Describe a walk through a park.", "Tell me about a teacher.", "Describe a busy kitchen.",
    "Write a sentence about a train station.", "Describe a family dinner.", "Tell me about a musician.",
    "Describe a garden.", "Write a sentence about a fisherman.", "Describe a market.",
    "Tell me about a small shop.", "Describe a football match.", "Write about a painter at work.",
    "Describe a school classroom.", "Tell me about a baker.", "Describe a river.",
    "Write a sentence about a nurse.", "Describe a library.", "Tell me about a farmer.",
    "Describe a rainy street.", "Write about a carpenter.", "Describe a birthday party.",
    "Tell me about a choir.", "Describe a museum.", "Write a sentence about a bus driver.",
    "My neighbour", "The old man", "Anna and her brother", "The students in the library",
    "Describe a beach.", "Tell me about a chef.", "Describe a village.", "Write about a postman.",
)


def pairs(rng: random.Random) -> list[tuple[str, str, str]]:
    """(past, present, verb) sentences for every subject x verb, each in a random frame."""
    out = []
    for s, plural in SUBJECTS:
        for base, third, past, rest in VERBS:
            frame = rng.choice(FRAMES)
            present = base if plural else third
            out.append((frame.format(S=cap(s), s=s, v=past, r=rest),
                        frame.format(S=cap(s), s=s, v=present, r=rest), base))
    return out
