"""``truth``: true vs false factual statements that share their wording.

Four families: arithmetic (the false answer is off by a small amount), comparisons (the
comparator flips), capitals (a real capital of another country), and hand-written simple
facts. Every pair differs in one or two words, in the spirit of the true/false statement
sets of Marks & Tegmark, "The Geometry of Truth" (2023), arXiv:2310.06824.
"""

from __future__ import annotations

import random

from pipeline.concepts._text import alt

ARITHMETIC = (
    ("add", "{a} plus {b} equals {c}."),
    ("add", "The sum of {a} and {b} is {c}."),
    ("add", "If you add {a} to {b}, you get {c}."),
    ("sub", "{a} minus {b} equals {c}."),
    ("sub", "Taking {b} away from {a} leaves {c}."),
    ("mul", "{a} times {b} is {c}."),
    ("mul", "{a} multiplied by {b} gives {c}."),
)
COMPARISONS = (
    "{a} is [greater|less] than {b}.",
    "The number {a} is [larger|smaller] than {b}.",
    "{a} comes [after|before] {b} when counting upward.",
)
CAPITALS = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Germany", "Berlin"), ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Australia", "Canberra"),
    ("Russia", "Moscow"), ("China", "Beijing"), ("India", "New Delhi"), ("Kenya", "Nairobi"),
    ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Poland", "Warsaw"), ("Austria", "Vienna"), ("Ireland", "Dublin"),
    ("Peru", "Lima"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"),
    ("Thailand", "Bangkok"), ("South Korea", "Seoul"), ("Turkey", "Ankara"),
    ("Hungary", "Budapest"), ("Denmark", "Copenhagen"), ("Belgium", "Brussels"),
    ("Cuba", "Havana"), ("Chile", "Santiago"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"),
    ("the Philippines", "Manila"), ("Iran", "Tehran"), ("the Czech Republic", "Prague"),
    ("Ethiopia", "Addis Ababa"), ("Nigeria", "Abuja"), ("Morocco", "Rabat"),
    ("New Zealand", "Wellington"),
)
CAPITAL_TEMPLATES = ("{city} is the capital of {country}.", "The capital of {country} is {city}.")
FACTS = (
    ("Water boils at 100 degrees Celsius at sea level.", "Water boils at 40 degrees Celsius at sea level."),
    ("A triangle has three sides.", "A triangle has five sides."),
    ("The sun rises in the east.", "The sun rises in the west."),
    ("Spiders have eight legs.", "Spiders have six legs."),
    ("A week has seven days.", "A week has nine days."),
    ("The Earth orbits the Sun.", "The Sun orbits the Earth."),
    ("Whales are mammals.", "Whales are fish."),
    ("A year has twelve months.", "A year has ten months."),
    ("Bees make honey.", "Cows make honey."),
    ("Penguins cannot fly.", "Penguins can fly."),
    ("The Pacific is the largest ocean on Earth.", "The Arctic is the largest ocean on Earth."),
    ("Humans have two lungs.", "Humans have four lungs."),
    ("Light travels faster than sound.", "Sound travels faster than light."),
    ("A square has four equal sides.", "A square has three equal sides."),
    ("Plants need sunlight to grow.", "Plants need darkness to grow."),
    ("The Moon orbits the Earth.", "The Moon orbits Mars."),
    ("An hour has sixty minutes.", "An hour has ninety minutes."),
    ("A minute has sixty seconds.", "A minute has a hundred seconds."),
    ("Fish breathe through gills.", "Fish breathe through feathers."),
    ("Mount Everest is the highest mountain on Earth.", "Mount Everest is the lowest mountain on Earth."),
    ("The heart pumps blood through the body.", "The heart pumps air through the body."),
    ("Shakespeare wrote Hamlet.", "Shakespeare wrote the Odyssey."),
    ("Diamonds are made of carbon.", "Diamonds are made of salt."),
    ("Fire needs oxygen to burn.", "Fire needs water to burn."),
    ("The Nile is a river in Africa.", "The Nile is a river in Europe."),
    ("Bats are mammals.", "Bats are insects."),
    ("Jupiter is the largest planet in our solar system.", "Mercury is the largest planet in our solar system."),
    ("A decade is ten years.", "A decade is fifty years."),
    ("A century is one hundred years.", "A century is twenty years."),
    ("Kangaroos live in Australia.", "Kangaroos live in Antarctica."),
    ("Iron is attracted to magnets.", "Glass is attracted to magnets."),
    ("Sharks live in the ocean.", "Sharks live in the desert."),
    ("Frogs are amphibians.", "Frogs are birds."),
    ("Ice is frozen water.", "Ice is frozen sand."),
    ("Snow is cold.", "Snow is hot."),
    ("A spider spins webs.", "A spider spins wool."),
)

NEUTRAL = (
    "Tell me a fact about the Moon.", "What is the capital of Italy?", "How many legs does a spider have?",
    "What is seven plus five?", "Tell me something about the Pacific Ocean.", "Which planet is the largest?",
    "How many days are in a week?", "What do bees produce?", "Explain why the sky is blue.",
    "What is the boiling point of water?", "Who wrote Hamlet?", "What is twelve times three?",
    "Name a mammal that lives in the sea.", "Where do kangaroos live?", "What is the capital of Japan?",
    "How many sides does a hexagon have?", "What are diamonds made of?", "Is nine larger than four?",
    "Tell me a fact about the human heart.", "What is the tallest mountain on Earth?",
    "How many minutes are in an hour?", "Which is faster, light or sound?", "What is the capital of Kenya?",
    "Tell me a fact about penguins.", "What is forty minus eleven?", "Where is the Nile river?",
    "What do plants need to grow?", "How many months are in a year?", "Here is a fact about water:",
    "One thing everyone knows about the Sun is that", "What is the capital of Canada?",
    "Tell me a fact about frogs.",
)


def _arithmetic(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out: dict[str, str] = {}
    while len(out) < n:
        op, template = rng.choice(ARITHMETIC)
        if op == "mul":
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            c = a * b
        else:
            a, b = rng.randint(2, 60), rng.randint(2, 60)
            if op == "sub":
                a, b = max(a, b) + 1, min(a, b)
            c = a + b if op == "add" else a - b
        wrong = c + rng.choice((-10, -3, -2, -1, 1, 2, 3, 10))
        if wrong < 0:
            wrong = c + 2
        out.setdefault(template.format(a=a, b=b, c=c), template.format(a=a, b=b, c=wrong))
    return list(out.items())


def _comparisons(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out: dict[str, str] = {}
    while len(out) < n:
        a, b = rng.sample(range(1, 100), 2)
        template = rng.choice(COMPARISONS)
        true_side = 0 if a > b else 1
        out.setdefault(alt(template, true_side).format(a=a, b=b),
                       alt(template, 1 - true_side).format(a=a, b=b))
    return list(out.items())


def _capitals(rng: random.Random) -> list[tuple[str, str]]:
    order = list(CAPITALS)
    rng.shuffle(order)
    shift = rng.randint(1, len(order) - 1)  # a rotation: no country keeps its own capital
    out = []
    for i, (country, city) in enumerate(order):
        wrong = order[(i + shift) % len(order)][1]
        template = rng.choice(CAPITAL_TEMPLATES)
        out.append((template.format(city=city, country=country),
                    template.format(city=wrong, country=country)))
    return out


def pairs(rng: random.Random) -> list[tuple[str, str, str]]:
    """(true, false, group) triples: 110 arithmetic, 60 comparisons, 40 capitals, the facts.

    Statements share no content across pairs, so each pair is its own split group.
    """
    both = _arithmetic(rng, 110) + _comparisons(rng, 60) + _capitals(rng) + list(FACTS)
    return [(t, f, t) for t, f in both]
