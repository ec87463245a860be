"""``formality``: the same workplace message in a formal and a casual register.

Hand-written frame pairs that say the same thing, crossed with the thing it is about,
so pairs share content and differ in register.
"""

from __future__ import annotations

import random

OBJECTS = (
    "report", "invoice", "contract", "proposal", "schedule", "budget", "presentation",
    "application", "project plan", "agenda", "draft", "survey", "meeting summary", "itinerary",
    "order", "spreadsheet", "estimate", "policy document", "press release", "training plan",
)
# (formal, informal); {o}: the object.
FRAMES = (
    ("I would be most grateful if you could send me the {o}.", "Hey, can you just send me the {o}?"),
    ("Please find the {o} attached for your review.", "Here's the {o}, have a look."),
    ("I regret to inform you that the {o} has been delayed.", "Ugh, the {o} is gonna be late."),
    ("Would you be so kind as to review the {o} by Friday?", "Can you look over the {o} by Friday?"),
    ("Kindly confirm receipt of the {o} at your earliest convenience.", "Lemme know when you get the {o}."),
    ("I should like to discuss the {o} with you tomorrow morning.", "Wanna talk about the {o} tomorrow?"),
    ("We sincerely apologise for the errors in the {o}.", "Sorry, we totally messed up the {o}."),
    ("Thank you very much for your assistance with the {o}.", "Thanks a bunch for helping with the {o}!"),
    ("I am afraid I shall be unable to finish the {o} today.", "Can't finish the {o} today, sorry."),
    ("Please do not hesitate to contact me regarding the {o}.", "Just ping me about the {o} whenever."),
    ("Could you please advise me on the current status of the {o}?", "So what's up with the {o}?"),
    ("I am pleased to inform you that the {o} has been approved.", "Good news, the {o} got the green light!"),
)

NEUTRAL = (
    "Write a message to a coworker about tomorrow's meeting.", "Write a note to your landlord about the heating.",
    "Reply to a customer who asked about a late delivery.", "Write an email to a hotel about your booking.",
    "Ask your manager for a day off.", "Write a message inviting a colleague to lunch.",
    "Tell a client that the project is finished.", "Write a note to a neighbour about a parcel.",
    "Describe your job to a new colleague.", "Write a thank-you note to a teacher.",
    "Ask a shop about the opening hours.", "Write a reminder about the team budget.",
    "Tell your team that the deadline has moved.", "Write a short cover letter opening.",
    "Explain a delay to a customer.", "Ask a friend to send you the photos.",
    "Write a message cancelling an appointment.", "Introduce yourself to a new team.",
    "Write an update about the quarterly report.", "Ask a supplier for a price estimate.",
    "Write a note welcoming a new employee.", "Tell your colleague the printer is broken.",
    "Write a message asking for feedback on a draft.", "Confirm a dinner reservation.",
    "Write a message about the office party.", "Ask your professor about the exam.",
    "Dear team,", "Regarding the contract,", "Write a short announcement about a new policy.",
    "Ask someone to review your presentation.", "Write a message about a missing invoice.",
    "Tell a coworker you will be late.",
)


def pairs(rng: random.Random) -> list[tuple[str, str, str]]:
    """(formal, informal, object) messages for every frame x object."""
    return [(formal.format(o=o), informal.format(o=o), o) for formal, informal in FRAMES for o in OBJECTS]
