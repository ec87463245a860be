"""``truth``: true vs false factual statements that share their wording.

Each pair is one template about one subject, completed once with the true answer and
once with a false one, in the spirit of the true/false statement sets of Marks & Tegmark,
"The Geometry of Truth" (2023), arXiv:2310.06824. The facts are ones a 135M-parameter
model reliably knows (it assigns the true sentence the higher likelihood), because a
direction can only separate what the model represents: an earlier version built mostly
on two-digit arithmetic and number comparisons was near chance on SmolLM2-135M, whose
likelihood preferred the true statement in only 65% of those pairs.

Families: capitals of well-known countries (two templates), well-known cities placed in
their country (two templates), one-digit addition, and hand-written everyday facts
(colours, animals, body parts, hot/cold, opposites); dropped facts and orderings were ones
SmolLM2-135M's likelihood got wrong. The split group is the subject (a country, a sum, a
fact's subject), so the test split holds unseen subjects. On SmolLM2-135M the geography
families carry most of the linear signal (difference of means ~0.85-1.0 within family at
layers 13-18); addition and the everyday facts separate less (~0.6-0.7).
"""

from __future__ import annotations

import random

CAPITALS = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Germany", "Berlin"), ("Egypt", "Cairo"), ("Russia", "Moscow"), ("China", "Beijing"),
    ("England", "London"), ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Norway", "Oslo"),
    ("Sweden", "Stockholm"), ("Poland", "Warsaw"), ("Austria", "Vienna"), ("Ireland", "Dublin"),
    ("Thailand", "Bangkok"), ("South Korea", "Seoul"), ("Hungary", "Budapest"),
    ("Denmark", "Copenhagen"), ("Cuba", "Havana"), ("Finland", "Helsinki"),
    ("the Netherlands", "Amsterdam"), ("Peru", "Lima"), ("Argentina", "Buenos Aires"),
    ("Mexico", "Mexico City"), ("Kenya", "Nairobi"), ("Belgium", "Brussels"),
    ("the Czech Republic", "Prague"), ("Iran", "Tehran"),
)
CITIES = (
    ("Sydney", "Australia"), ("Melbourne", "Australia"), ("New York", "the United States"),
    ("Los Angeles", "the United States"), ("Chicago", "the United States"), ("Toronto", "Canada"),
    ("Vancouver", "Canada"), ("Barcelona", "Spain"), ("Munich", "Germany"), ("Hamburg", "Germany"),
    ("Milan", "Italy"), ("Venice", "Italy"), ("Naples", "Italy"), ("Marseille", "France"),
    ("Lyon", "France"), ("Manchester", "England"), ("Liverpool", "England"), ("Osaka", "Japan"),
    ("Kyoto", "Japan"), ("Shanghai", "China"), ("Hong Kong", "China"), ("Mumbai", "India"),
    ("New Delhi", "India"), ("Rio de Janeiro", "Brazil"), ("Sao Paulo", "Brazil"),
    ("Istanbul", "Turkey"), ("Saint Petersburg", "Russia"), ("Edinburgh", "Scotland"),
    ("Cape Town", "South Africa"), ("Dubai", "the United Arab Emirates"),
)
CITY_TEMPLATES = ("The city of {city} is in {country}.", "The city of {city} is located in {country}.")
CAPITAL_TEMPLATES = ("The capital of {country} is {city}.", "The capital city of {country} is {city}.")
ADDITION = ("{a} + {b} = {c}.",)

# (template, true completion, false completion); the subject word is the split group.
FACTS = (
    ("Fire is {}.", "hot", "cold"), ("The sun is {}.", "hot", "cold"),
    ("Lava is {}.", "hot", "cold"), ("Grass is {}.", "green", "purple"),
    ("The sky is {}.", "blue", "green"), ("Snow is {} in colour.", "white", "black"),
    ("Coal is {}.", "black", "white"), ("Milk is {}.", "white", "green"),
    ("Ripe tomatoes are {}.", "red", "blue"), ("Sugar tastes {}.", "sweet", "salty"),
    ("Honey is {}.", "sweet", "bitter"), ("A cow says {}.", "moo", "meow"),
    ("A dog says {}.", "woof", "moo"), ("A dog has {} legs.", "four", "eight"),
    ("A spider has {} legs.", "eight", "two"), ("A bird has {} legs.", "two", "six"),
    ("An insect has {} legs.", "six", "two"), ("Birds can {}.", "fly", "read"),
    ("Fish live in {}.", "water", "trees"), ("Fish swim in the {}.", "water", "sky"),
    ("Birds have {}.", "feathers", "scales"), ("Cows give us {}.", "milk", "wool"),
    ("Bees make {}.", "honey", "milk"), ("Hens lay {}.", "eggs", "milk"),
    ("Sheep give us {}.", "wool", "eggs"), ("Monkeys love to eat {}.", "bananas", "rocks"),
    ("A baby cat is called a {}.", "kitten", "puppy"), ("Cats chase {}.", "mice", "elephants"),
    ("We see with our {}.", "eyes", "ears"), ("We hear with our {}.", "ears", "eyes"),
    ("We smell with our {}.", "nose", "elbows"), ("We walk with our {}.", "feet", "ears"),
    ("We chew food with our {}.", "teeth", "hair"), ("A human hand has five {}.", "fingers", "wheels"),
    ("People have two {}.", "eyes", "noses"), ("A person has one {}.", "nose", "thousand noses"),
    ("The heart pumps {}.", "blood", "sand"), ("A week has {} days.", "seven", "twelve"),
    ("A triangle has {} sides.", "three", "nine"), ("A square has {} sides.", "four", "seven"),
    ("The sun rises in the {}.", "morning", "evening"), ("We sleep at {}.", "night", "noon"),
    ("It is dark at {}.", "night", "noon"), ("The moon shines at {}.", "night", "noon"),
    ("Rain falls from the {}.", "sky", "ground"), ("Water freezes when it gets {}.", "cold", "hot"),
    ("Cars drive on {}.", "roads", "clouds"), ("Boats float on {}.", "water", "air"),
    ("Planes fly in the {}.", "sky", "sea"), ("Books are for {}.", "reading", "eating"),
    ("We write with a {}.", "pen", "spoon"), ("We eat soup with a {}.", "spoon", "pen"),
    ("We cut paper with {}.", "scissors", "spoons"), ("Doctors work in {}.", "hospitals", "submarines"),
    ("Teachers work in {}.", "schools", "volcanoes"), ("Christmas is in {}.", "December", "July"),
    ("The opposite of hot is {}.", "cold", "warm"), ("The opposite of big is {}.", "small", "large"),
    ("The opposite of up is {}.", "down", "above"), ("The opposite of day is {}.", "night", "noon"),
    ("The opposite of black is {}.", "white", "dark"), ("The opposite of happy is {}.", "sad", "glad"),
    ("The opposite of fast is {}.", "slow", "quick"), ("The opposite of open is {}.", "closed", "open"),
    ("The opposite of old is {}.", "young", "ancient"), ("The opposite of left is {}.", "right", "left"),
    ("The opposite of wet is {}.", "dry", "damp"), ("A car has four {}.", "wheels", "wings"),
    ("Camels live in the {}.", "desert", "ocean"),
    ("Rabbits like to eat {}.", "carrots", "stones"), ("A clock tells the {}.", "time", "weather"),
    ("We drink {} when we are thirsty.", "water", "sand"),
    ("Chocolate is {}.", "sweet", "salty"), ("A bicycle has two {}.", "wheels", "wings"),
    ("Summer is {}.", "warm", "freezing"),
    ("A tiger has {}.", "stripes", "feathers"), ("An elephant is {}.", "big", "tiny"),
    ("A mouse is {}.", "small", "huge"),
)

NEUTRAL = (
    "Tell me a fact about the Moon.", "What is the capital of Italy?", "How many legs does a spider have?",
    "What is three plus four?", "Tell me something about the ocean.", "What colour is a banana?",
    "How many days are in a week?", "What do bees produce?", "Explain why the sky is blue.",
    "What sound does a duck make?", "Which day comes after Friday?", "What is the capital of Japan?",
    "Name an animal that lives in the sea.", "What do we use our ears for?", "Is fire hot or cold?",
    "How many sides does a hexagon have?", "What is the opposite of tall?", "Which month comes after May?",
    "Tell me a fact about the human heart.", "What is the tallest mountain on Earth?",
    "How many minutes are in an hour?", "Which is faster, light or sound?", "What is the capital of Kenya?",
    "Tell me a fact about penguins.", "What is six minus two?", "What do cows eat?",
    "What do plants need to grow?", "How many months are in a year?", "Here is a fact about water:",
    "One thing everyone knows about the Sun is that", "What is the capital of Spain?",
    "Tell me a fact about frogs.",
)


def _capitals(rng: random.Random) -> list[tuple[str, str, str]]:
    """Both templates per country, each with a different wrong (real, well-known) capital."""
    out = []
    for template in CAPITAL_TEMPLATES:
        order = list(CAPITALS)
        rng.shuffle(order)
        shift = rng.randint(1, len(order) - 1)  # a rotation: no country keeps its own capital
        for i, (country, city) in enumerate(order):
            wrong = order[(i + shift) % len(order)][1]
            out.append((template.format(city=city, country=country),
                        template.format(city=wrong, country=country), country))
    return out


def _cities(rng: random.Random) -> list[tuple[str, str, str]]:
    """Every capital and major city placed in its country, and in another listed country."""
    places = [(city, country) for country, city in CAPITALS] + list(CITIES)
    countries = sorted({country for _, country in places})
    out = []
    for template in CITY_TEMPLATES:
        for city, country in places:
            wrong = rng.choice([c for c in countries if c != country])
            out.append((template.format(city=city, country=country),
                        template.format(city=city, country=wrong), country))
    return out


def _addition(rng: random.Random) -> list[tuple[str, str, str]]:
    """One-digit sums (a <= b, total <= 10); the wrong total is 2 to 4 away from the right one."""
    out = []
    for a in range(1, 6):
        for b in range(a, 11 - a):
            c = a + b
            wrong = c + rng.choice((-4, -3, -2, 2, 3, 4))
            if wrong < 1:
                wrong = c + rng.choice((2, 3, 4))
            for template in ADDITION:
                out.append((template.format(a=a, b=b, c=c), template.format(a=a, b=b, c=wrong), f"{a}+{b}"))
    return out


N_FACTS = 35


def pairs(rng: random.Random) -> list[tuple[str, str, str]]:
    """(true, false, subject) triples from every family (the generator keeps 240 of them)."""
    facts = [(t.format(yes), t.format(no), t.split(" {}")[0]) for t, yes, no in FACTS]
    # Geography and sums fill most of the 240 pairs; everyday facts, spread over many
    # templates and not sharing one linear direction in a 135M model, are a minority.
    return _capitals(rng) + _cities(rng) + _addition(rng) + facts[:N_FACTS]
