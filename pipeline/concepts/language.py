"""``language``: the same sentence in English and in French.

Sentence frames with a noun slot; each noun carries its French definite and indefinite
article (gender and elision written out, not guessed), so every pair is a correct
translation and the pair differs only in language.
"""

from __future__ import annotations

import random

from pipeline.concepts._text import a_an, cap

# (english, french definite, french indefinite)
NOUNS = (
    ("cat", "le chat", "un chat"), ("dog", "le chien", "un chien"), ("book", "le livre", "un livre"),
    ("key", "la clé", "une clé"), ("cup", "la tasse", "une tasse"), ("chair", "la chaise", "une chaise"),
    ("bottle", "la bouteille", "une bouteille"), ("hat", "le chapeau", "un chapeau"),
    ("bag", "le sac", "un sac"), ("pen", "le stylo", "un stylo"), ("apple", "la pomme", "une pomme"),
    ("ball", "le ballon", "un ballon"), ("letter", "la lettre", "une lettre"),
    ("box", "la boîte", "une boîte"), ("map", "la carte", "une carte"), ("lamp", "la lampe", "une lampe"),
    ("clock", "l'horloge", "une horloge"), ("umbrella", "le parapluie", "un parapluie"),
    ("knife", "le couteau", "un couteau"), ("spoon", "la cuillère", "une cuillère"),
    ("plate", "l'assiette", "une assiette"), ("bicycle", "le vélo", "un vélo"),
    ("newspaper", "le journal", "un journal"), ("phone", "le téléphone", "un téléphone"),
    ("shoe", "la chaussure", "une chaussure"), ("ticket", "le billet", "un billet"),
    ("coat", "le manteau", "un manteau"), ("candle", "la bougie", "une bougie"),
    ("mirror", "le miroir", "un miroir"), ("flower", "la fleur", "une fleur"),
    ("bird", "l'oiseau", "un oiseau"), ("ring", "la bague", "une bague"),
    ("watch", "la montre", "une montre"), ("pillow", "l'oreiller", "un oreiller"),
    ("basket", "le panier", "un panier"), ("towel", "la serviette", "une serviette"),
    ("glass", "le verre", "un verre"),
)
# (english, french); {the}/{a}: English noun phrase, {le}/{un}: French noun phrase.
FRAMES = (
    ("{The} is on the table.", "{Le} est sur la table."),
    ("I see {a} near the window.", "Je vois {un} près de la fenêtre."),
    ("My sister bought {a} yesterday.", "Ma sœur a acheté {un} hier."),
    ("We are looking for {the}.", "Nous cherchons {le}."),
    ("There is {a} in the kitchen.", "Il y a {un} dans la cuisine."),
    ("The children found {a} in the park.", "Les enfants ont trouvé {un} dans le parc."),
    ("He forgot {the} at school.", "Il a oublié {le} à l'école."),
    ("She is cleaning {the} carefully.", "Elle nettoie {le} avec soin."),
    ("Our neighbour sold {the} last week.", "Notre voisin a vendu {le} la semaine dernière."),
    ("I would like {a}, please.", "Je voudrais {un}, s'il vous plaît."),
)

NEUTRAL = (
    "Tell me about your weekend.", "Describe the city where you live.",
    "Write a sentence about the weather today.", "Describe a walk through a park.",
    "Tell me about a book you read recently.", "Describe your morning routine.",
    "Write a short message to a friend about dinner.", "Describe the kitchen in your house.",
    "Tell me about a recent trip.", "Describe a busy market.", "Tell me about your job.",
    "Describe a rainy afternoon.", "Tell me about your family.", "Describe your favourite meal.",
    "Tell me about the house you grew up in.", "Describe a visit to a museum.",
    "Write a sentence about a garden.", "Tell me about your commute.", "Describe a birthday party.",
    "Tell me about the last holiday you took.", "The cat is sitting on", "Yesterday I went to the",
    "My favourite season is", "Describe a train station.", "Write a note to your neighbour.",
    "Tell me about a friend of yours.", "Describe what you can see from your window.",
    "Explain how to make a cup of tea.", "Describe a small village.", "Tell me about a school day.",
    "Write a sentence about a dog.", "Describe the beach in summer.",
)


def pairs(rng: random.Random) -> list[tuple[str, str, str]]:
    """(english, french, noun) translations for every frame x noun."""
    out = []
    for en, fr in FRAMES:
        for noun, le, un in NOUNS:
            english = en.format(The=cap(f"the {noun}"), the=f"the {noun}", a=a_an(noun))
            french = fr.format(Le=cap(le), le=le, un=un)
            out.append((english, french, noun))
    return out
