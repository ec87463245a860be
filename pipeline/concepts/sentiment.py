"""``sentiment``: the same opinion frame about the same subject, positive vs negative.

Each pair shares a template and a subject; only the evaluative words differ, so a
difference of means isolates valence rather than topic.
"""

from __future__ import annotations

import random

from pipeline.concepts._text import alt, cap

SUBJECTS = (
    "the movie", "the restaurant", "the hotel", "the concert", "my new phone", "the book",
    "the service", "the coffee", "the new album", "the museum tour", "the customer support",
    "the flight", "the food", "the apartment", "the lecture", "the hike", "the party",
    "the rental car", "the play", "the bakery", "the video game", "the conference",
    "the train ride", "the new laptop",
)
GOOD = ("wonderful", "delightful", "excellent", "fantastic", "superb", "lovely",
        "brilliant", "amazing", "impressive", "enjoyable", "charming", "outstanding")
BAD = ("terrible", "awful", "dreadful", "disappointing", "horrible", "boring",
       "unpleasant", "dismal", "frustrating", "miserable", "painful", "lousy")
FEEL_GOOD = ("happy", "grateful", "delighted", "cheerful", "inspired", "relaxed")
FEEL_BAD = ("sad", "angry", "frustrated", "miserable", "annoyed", "exhausted")

# {s}: subject, {adj}: evaluative adjective, {feel}: feeling; [a|b]: positive|negative.
TEMPLATES = (
    "{S} was {adj}.",
    "Honestly, {s} was {adj} from start to finish.",
    "I thought {s} was {adj}.",
    "Everyone agreed that {s} was {adj}.",
    "{S} left me feeling {feel}.",
    "I [loved|hated] {s}; it was {adj}.",
    "{S} was {adj}, and I [would gladly|would never] try it again.",
    "{S} [exceeded|fell far short of] my expectations.",
    "After a long week, {s} was a [pleasant surprise|real letdown].",
    "My friends said {s} was {adj}, and they were right.",
)

NEUTRAL = (
    "Write a short review of a restaurant you visited.",
    "Describe the city where you live.",
    "Tell me about your weekend.",
    "Write a sentence about the weather today.",
    "Describe a walk through a park.",
    "Tell me about a book you read recently.",
    "Describe your morning routine.",
    "Tell me about a film you watched.",
    "Write a few words about your new phone.",
    "Describe the kitchen in your house.",
    "Tell me about a recent trip.",
    "Write a postcard from the seaside.",
    "Describe a busy market.",
    "Tell me about your job.",
    "Describe a rainy afternoon.",
    "Write a short review of a hotel.",
    "Describe a football match you saw.",
    "Tell me about a concert.",
    "Describe your last meal.",
    "Tell me about the house you grew up in.",
    "Describe a visit to the dentist.",
    "Tell me about a museum.",
    "Describe a new café in town.",
    "Tell me about your commute.",
    "Write a product description for a backpack.",
    "Describe a birthday party.",
    "Tell me about the last holiday you took.",
    "The movie I saw last night was",
    "My first day at the new job was",
    "The food at the wedding was",
    "Describe the service at a car repair shop.",
    "Tell me about a video game you played.",
)


def pairs(rng: random.Random) -> list[tuple[str, str, str]]:
    """All template x subject combinations as (positive, negative, subject) triples."""
    out = []
    for template in TEMPLATES:
        for subject in SUBJECTS:
            texts = []
            for side, (adjs, feels) in enumerate(((GOOD, FEEL_GOOD), (BAD, FEEL_BAD))):
                t = alt(template, side)
                texts.append(t.format(s=subject, S=cap(subject), adj=rng.choice(adjs),
                                      feel=rng.choice(feels)))
            out.append((texts[0], texts[1], subject))
    return out
