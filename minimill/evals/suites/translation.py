"""Translation of fixed short English phrases into French, Spanish or German, from a table shipped here."""

from __future__ import annotations

from minimill.evals.suite import Item, Suite
from minimill.evals.suites._common import score, seeded, short_answer, strip_accents, user_item, words_only

NAME = "translation"

# English phrase -> (French, Spanish, German) accepted translations, most usual first.
PHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "thank you": (("merci",), ("gracias",), ("danke",)),
    "hello": (("bonjour", "salut"), ("hola",), ("hallo", "guten tag")),
    "goodbye": (("au revoir",), ("adiós",), ("auf wiedersehen", "tschüss")),
    "please": (("s'il vous plaît", "s'il te plaît"), ("por favor",), ("bitte",)),
    "yes": (("oui",), ("sí",), ("ja",)),
    "no": (("non",), ("no",), ("nein",)),
    "good morning": (("bonjour",), ("buenos días",), ("guten morgen",)),
    "good night": (("bonne nuit",), ("buenas noches",), ("gute nacht",)),
    "water": (("eau", "l'eau"), ("agua", "el agua"), ("wasser", "das wasser")),
    "cat": (("chat", "le chat"), ("gato", "el gato"), ("katze", "die katze")),
    "dog": (("chien", "le chien"), ("perro", "el perro"), ("hund", "der hund")),
    "house": (("maison", "la maison"), ("casa", "la casa"), ("haus", "das haus")),
    "book": (("livre", "le livre"), ("libro", "el libro"), ("buch", "das buch")),
    "bread": (("pain", "le pain"), ("pan", "el pan"), ("brot", "das brot")),
    "apple": (("pomme", "la pomme"), ("manzana", "la manzana"), ("apfel", "der apfel")),
    "sun": (("soleil", "le soleil"), ("sol", "el sol"), ("sonne", "die sonne")),
    "friend": (("ami", "amie", "l'ami"), ("amigo", "amiga", "el amigo"), ("freund", "freundin", "der freund")),
    "red": (("rouge",), ("rojo", "roja"), ("rot",)),
    "one": (("un", "une"), ("uno", "una"), ("eins",)),
    "two": (("deux",), ("dos",), ("zwei",)),
    "three": (("trois",), ("tres",), ("drei",)),
    "I love you": (("je t'aime",), ("te quiero", "te amo"), ("ich liebe dich",)),
    "how are you?": (("comment allez-vous", "comment vas-tu", "comment ça va", "ça va"),
                     ("cómo estás", "cómo está usted", "qué tal"),
                     ("wie geht es dir", "wie geht's", "wie geht es ihnen")),
    "excuse me": (("excusez-moi", "pardon"), ("perdón", "disculpe", "con permiso"),
                  ("entschuldigung", "entschuldigen sie")),
}
LANGUAGES = ("French", "Spanish", "German")
TABLE: tuple[tuple[str, str, tuple[str, ...]], ...] = tuple(
    (english, language, accepted[k]) for english, accepted in PHRASES.items() for k, language in enumerate(LANGUAGES))


def accepted_forms(references: list[str] | tuple[str, ...]) -> set[str]:
    """The normalised references and their unaccented spellings."""
    forms = {words_only(ref) for ref in references}
    return forms | {strip_accents(form) for form in forms}


def generate(seed: int, n: int) -> list[Item]:
    """n (phrase, language) pairs in a seeded order (reshuffled after each full pass); references are the accepted
    translations."""
    rng = seeded(NAME, seed)
    order: list[int] = []
    while len(order) < n:
        block = list(range(len(TABLE)))
        rng.shuffle(block)
        order += block
    items = []
    for i, k in enumerate(order[:n]):
        english, language, accepted = TABLE[k]
        prompt = f'Translate "{english}" into {language}. Answer with only the translation.'
        items.append(user_item(NAME, seed, i, prompt, list(accepted), max_tokens=12))
    return items


def grade(item: Item, answer: str) -> float:
    """1 if the normalised answer (lower case, punctuation dropped, accents kept) equals an accepted form or starts
    with one followed by more words ("merci beaucoup"); unaccented spellings of the references count too."""
    text = words_only(short_answer(answer))
    return score(any(text == form or text.startswith(form + " ") for form in accepted_forms(item.reference)))


SUITE = Suite(
    name=NAME, version="1", description="Translation of short fixed phrases from English into French, Spanish, German.",
    generate=generate, grade=grade,
    keywords=("translate", "translation", "in french", "in spanish", "in german", "into french", "into spanish",
              "into german", "how do you say"),
)
