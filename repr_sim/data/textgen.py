"""Six procedurally generated text domains: stand-ins for the study's six corpora.

The built-in text study (`reprsim demo --text`) cannot download TinyStories or wikitext,
so it trains on text generated here, one domain per corpus of docs/protocol.md section 2, each
with its own vocabulary and its own grammar (sentence templates, punctuation, layout):

    tinycodes        a request, then a one-line C-like function (braces, semicolons)
    tinystories      children's stories: simple words, dialogue in quotes, "The end."
    tinytextbooks    lessons: definitions, examples, key terms, review questions
    tinywebtext      reviews and forum posts: prices, URLs, hashtags, slang, emoticons
    wikitext         encyclopedia articles in wikitext-103 style (" = Title = ", " @-@ ")
    shakespeare_all  verse: speeches "NAME:" with rhymed couplets in archaic English

Every document is one line (no line breaks inside), so a domain's file is read by
`reprsim prepare-text <corpus> --data-files <file> --tokenizer bytes` as one document
per line. shakespeare_all is the exception by design: like the study's input.txt it is a
single text (speeches separated by blank lines), which prepare-text splits 90/10 by
characters.

Deterministic: the same (domain, size, seed) always gives the same text (Python's
`random.Random` seeded with a string, which does not depend on PYTHONHASHSEED).

    python -m repr_sim.data.textgen OUT_DIR --chars 200000 --seed 0
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from pathlib import Path

from ..atomic import atomic_write_text

Rng = random.Random


def _pick(rng: Rng, words: tuple[str, ...] | list[str]) -> str:
    return words[rng.randrange(len(words))]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# ---- tinycodes: a request and a one-line function ---------------------------------------
_CODE_NOUNS = ("values", "items", "buffer", "nodes", "records", "tokens", "matrix", "queue",
               "offsets", "packets", "scores", "weights", "keys", "pixels", "rows")
_CODE_VERBS = ("sum", "count", "filter", "sort", "merge", "parse", "flatten", "reverse",
               "normalize", "validate", "encode", "hash", "scan", "clamp")
_CODE_TYPES = ("int", "float", "size_t", "uint8_t", "double", "bool", "char")
_CODE_LANGS = ("C", "C99", "C11", "portable C", "embedded C")
_CODE_OPS = ("+=", "-=", "*=", "^=", "|=")
_CODE_CMP = ("<", ">", "<=", ">=", "==", "!=")


def _code_statement(rng: Rng, var: str, acc: str) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return f"{acc} {_pick(rng, _CODE_OPS)} {var}[i];"
    if kind == 1:
        return (f"if ({var}[i] {_pick(rng, _CODE_CMP)} {rng.randrange(256)}) "
                f"{{ {acc} {_pick(rng, _CODE_OPS)} {rng.randrange(1, 9)}; }}")
    if kind == 2:
        return f"{var}[i] = {var}[i] {_pick(rng, ('&', '>>', '<<', '%'))} {rng.randrange(1, 17)};"
    return f"if ({acc} {_pick(rng, _CODE_CMP)} 0x{rng.randrange(4096):x}) {{ break; }}"


def code_document(rng: Rng) -> str:
    verb, noun = _pick(rng, _CODE_VERBS), _pick(rng, _CODE_NOUNS)
    ty, lang = _pick(rng, _CODE_TYPES), _pick(rng, _CODE_LANGS)
    acc = _pick(rng, ("acc", "total", "result", "state", "count"))
    body = " ".join(_code_statement(rng, noun, acc) for _ in range(rng.randint(1, 4)))
    prompt = (f"Write a {lang} function {verb}_{noun}() that takes an array of {ty} "
              f"{noun} and its length n and returns the {_pick(rng, ('checksum', 'total', 'count', 'flag'))}.")
    code = (f"{ty} {verb}_{noun}(const {ty} *{noun}, size_t n) {{ {ty} {acc} = {rng.randrange(10)}; "
            f"for (size_t i = 0; i < n; ++i) {{ {body} }} return {acc}; }}")
    return f"{prompt} {code}"


# ---- tinystories: simple stories ---------------------------------------------------------
_ST_NAMES = ("Lily", "Tom", "Ben", "Mia", "Sam", "Anna", "Max", "Sue", "Timmy", "Zoe", "Lucy", "Jack")
_ST_ANIMALS = ("cat", "dog", "bird", "bunny", "frog", "duck", "bear", "puppy", "kitten", "mouse")
_ST_ADJ = ("little", "happy", "big", "kind", "shy", "brave", "silly", "sleepy", "tiny", "friendly")
_ST_PLACES = ("park", "garden", "forest", "house", "pond", "beach", "yard", "school", "farm")
_ST_THINGS = ("ball", "kite", "toy", "box", "hat", "cake", "flower", "boat", "balloon", "cookie")
_ST_VERBS = ("play", "run", "jump", "sing", "dance", "swim", "hide", "paint", "climb")
_ST_FEEL = ("happy", "sad", "scared", "proud", "excited", "sorry", "surprised")
_ST_KIN = ("mom", "dad", "friend", "sister", "brother", "grandma")


def story_document(rng: Rng) -> str:
    name, other = rng.sample(_ST_NAMES, 2)
    animal, thing = _pick(rng, _ST_ANIMALS), _pick(rng, _ST_THINGS)
    place = _pick(rng, _ST_PLACES)
    sentences = [
        f"Once upon a time, there was a {_pick(rng, _ST_ADJ)} {animal} named {name}.",
        f"{name} loved to {_pick(rng, _ST_VERBS)} in the {place}.",
    ]
    middle = [
        lambda: f"One day, {name} found a {_pick(rng, _ST_ADJ)} {thing}.",
        lambda: f"\"Can I {_pick(rng, _ST_VERBS)} with you?\" asked {other}.",
        lambda: f"{name} felt {_pick(rng, _ST_FEEL)} and ran to {_pick(rng, _ST_KIN)}.",
        lambda: f"\"Look at my {thing}!\" said {name} with a big smile.",
        lambda: f"They went to the {_pick(rng, _ST_PLACES)} to {_pick(rng, _ST_VERBS)} together.",
        lambda: f"But the {thing} was stuck in a tree, and {name} was {_pick(rng, _ST_FEEL)}.",
        lambda: f"{other} said, \"Do not be {_pick(rng, _ST_FEEL)}. I will help you.\"",
    ]
    for _ in range(rng.randint(2, 6)):
        sentences.append(_pick(rng, middle)())
    sentences.append(f"From that day on, {name} and {other} were best friends. The end.")
    return " ".join(sentences)


# ---- tinytextbooks: lessons --------------------------------------------------------------
_TB_TOPICS = ("photosynthesis", "gravity", "fractions", "the water cycle", "electricity",
              "cell division", "volcanoes", "ecosystems", "magnetism", "erosion",
              "chemical bonds", "the solar system", "probability", "sound waves")
_TB_TERMS = ("energy", "matter", "force", "structure", "function", "variable", "equation",
             "temperature", "pressure", "molecule", "organism", "surface", "density", "ratio",
             "current", "frequency", "mass", "nucleus")
_TB_VERBS = ("describes", "explains", "converts", "transfers", "depends on", "determines",
             "consists of", "produces", "regulates", "measures")
_TB_LINKS = ("Therefore", "In addition", "For example", "As a result", "In summary",
             "Consequently", "Moreover", "Similarly")
_TB_NOUNS = ("process", "principle", "relationship", "quantity", "property", "method")


def textbook_document(rng: Rng) -> str:
    topic = _pick(rng, _TB_TOPICS)
    t1, t2, t3 = rng.sample(_TB_TERMS, 3)
    parts = [
        f"Lesson {rng.randint(1, 40)}: {_cap(topic)}.",
        f"In this lesson, students will learn how {topic} {_pick(rng, _TB_VERBS)} {t1}.",
        f"Definition: {_cap(t1)} is the {_pick(rng, _TB_NOUNS)} that {_pick(rng, _TB_VERBS)} "
        f"the {t2} of a system.",
    ]
    for _ in range(rng.randint(1, 4)):
        parts.append(f"{_pick(rng, _TB_LINKS)}, the {_pick(rng, _TB_TERMS)} of a sample "
                     f"{_pick(rng, _TB_VERBS)} its {_pick(rng, _TB_TERMS)}.")
    parts.append(f"Example {rng.randint(1, 9)}: if the {t2} doubles, the {t3} changes by a "
                 f"factor of {rng.randint(2, 5)}.")
    parts.append(f"Key terms: {t1}, {t2}, {t3}.")
    parts.append(f"Review question: What {_pick(rng, _TB_VERBS)} the {t3} in {topic}?")
    return " ".join(parts)


# ---- tinywebtext: reviews and forum posts ------------------------------------------------
_WEB_PRODUCTS = ("blender", "headphones", "phone case", "backpack", "coffee maker", "charger",
                 "sneakers", "desk lamp", "air fryer", "keyboard", "webcam", "router")
_WEB_ADJ = ("awesome", "terrible", "cheap", "legit", "meh", "amazing", "broken", "solid",
            "overpriced", "flimsy", "sturdy", "sketchy")
_WEB_SLANG = ("lol", "tbh", "imo", "omg", "btw", "smh", "ngl", "fwiw", "idk")
_WEB_SITES = ("shopdeals", "gadgethub", "bargainbin", "techforum", "reviewzone", "dealfinder")
_WEB_EMO = (":)", ":(", ":D", ";)", "<3", "xD", "^^")
_WEB_TAGS = ("#deal", "#review", "#unboxing", "#fail", "#musthave", "#techtips", "#savings")


def _web_url(rng: Rng) -> str:
    return f"https://www.{_pick(rng, _WEB_SITES)}.com/p/{rng.randrange(10**5, 10**6)}?ref=u{rng.randrange(999)}"


def web_document(rng: Rng) -> str:
    product = _pick(rng, _WEB_PRODUCTS)
    price = f"${rng.randint(5, 299)}.{rng.randrange(100):02d}"
    date = f"{rng.randint(2009, 2023)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    user = f"{_pick(rng, ('user', 'xx_', 'deal', 'gamer', 'mom'))}{rng.randrange(10000)}"
    parts = [f"Posted by {user} on {date} |"]
    options = [
        lambda: f"Got this {product} for {price} and it's {_pick(rng, _WEB_ADJ)} {_pick(rng, _WEB_SLANG)}!!!",
        lambda: f"{_cap(_pick(rng, _WEB_SLANG))} the {_pick(rng, ('shipping', 'box', 'manual', 'seller'))} was {_pick(rng, _WEB_ADJ)} {_pick(rng, _WEB_EMO)}",
        lambda: f"Rating: {rng.randint(1, 5)}/5 stars.",
        lambda: f"Link: {_web_url(rng)}",
        lambda: f"UPDATE: returned it after {rng.randint(2, 30)} days, refund took {rng.randint(1, 9)} weeks.",
        lambda: f"Anyone else's {product} stop working?? {_pick(rng, _WEB_EMO)}",
        lambda: f"{_pick(rng, _WEB_TAGS)} {_pick(rng, _WEB_TAGS)}",
        lambda: f"Reply #{rng.randint(1, 99)}: {_pick(rng, ('+1', 'same here', 'this.', 'nope', 'source?'))}",
    ]
    for _ in range(rng.randint(2, 6)):
        parts.append(_pick(rng, options)())
    return " ".join(parts)


# ---- wikitext: encyclopedia articles -----------------------------------------------------
_WK_SYLL = ("var", "esk", "hol", "mar", "dun", "bre", "tal", "orn", "vik", "sel", "gar", "ost",
            "lin", "rav", "kor", "ath", "wen", "bur")
_WK_TYPES = ("River", "Fortress", "Cathedral", "Province", "Railway", "Dynasty", "Regiment",
             "Abbey", "Treaty", "Expedition")
_WK_VERBS = ("constructed", "fought", "annexed", "established", "restored", "designated",
             "dissolved", "surveyed", "ratified", "besieged")
_WK_NATIONS = ("Norwegian", "Ottoman", "Bavarian", "Portuguese", "Flemish", "Byzantine",
               "Hanoverian", "Castilian")
_WK_ROLES = ("archbishop", "governor", "admiral", "cartographer", "chancellor", "margrave")


def _wk_name(rng: Rng) -> str:
    return _cap("".join(_pick(rng, _WK_SYLL) for _ in range(rng.randint(2, 3))))


def wiki_document(rng: Rng) -> str:
    title = f"{_wk_name(rng)} {_pick(rng, _WK_TYPES)}"
    year = rng.randint(1100, 1950)
    parts = [f" = {title} = ",
             f"The {title} is a {_pick(rng, _WK_NATIONS)} landmark in the region of {_wk_name(rng)} .",
             f"It was {_pick(rng, _WK_VERBS)} in {year} by the {_pick(rng, _WK_ROLES)} {_wk_name(rng)} {_wk_name(rng)} ."]
    for _ in range(rng.randint(1, 4)):
        parts.append(f"In {year + rng.randint(1, 80)} , the {_pick(rng, _WK_TYPES).lower()} was "
                     f"{_pick(rng, _WK_VERBS)} during the {_wk_name(rng)} @-@ {_wk_name(rng)} war , "
                     f"with {rng.randint(1, 99)} @,@ {rng.randrange(1000):03d} men .")
    parts.append(f" = = {_pick(rng, ('History', 'Legacy', 'Geography', 'Architecture'))} = = ")
    parts.append(f"Its {_pick(rng, ('length', 'area', 'height'))} is {rng.randint(2, 900)} @.@ "
                 f"{rng.randint(0, 9)} km ( {rng.randint(1, 560)} mi ) .")
    return " ".join(parts)


# ---- shakespeare_all: speeches in rhymed verse -------------------------------------------
_SH_SPEAKERS = ("ROMEO", "JULIET", "KING HENRY", "LADY MACBETH", "HAMLET", "OTHELLO", "PORTIA",
                "FALSTAFF", "PROSPERO", "VIOLA", "BENEDICK", "CORDELIA")
_SH_OPEN = ("O", "Alas,", "Nay,", "Prithee,", "Methinks", "Hark,", "Fie,", "Ay,", "Wherefore")
_SH_PRON = ("thou", "thy lord", "my liege", "the queen", "sweet love", "fair maid", "good sir")
_SH_VERBS = ("dost swear", "hath wept", "doth woo", "shalt banish", "wilt beseech", "didst betray",
             "must forswear", "art sworn")
_SH_NOUNS = ("heaven", "heart", "crown", "sword", "grave", "honour", "fortune", "tongue", "soul",
             "blood", "throne", "oath")
_SH_RHYMES = (("night", "light", "sight", "bright", "flight", "spite"),
              ("heart", "part", "art", "depart", "smart", "start"),
              ("day", "away", "stay", "pray", "decay", "betray"),
              ("grave", "crave", "brave", "gave", "slave", "save"),
              ("fire", "desire", "entire", "attire", "retire", "sire"),
              ("breath", "death", "saith", "faith", "wraith", "heath"))


def _sh_line(rng: Rng, end: str) -> str:
    pattern = rng.randrange(3)
    if pattern == 0:
        return f"{_pick(rng, _SH_OPEN)} {_pick(rng, _SH_PRON)} {_pick(rng, _SH_VERBS)} by {end}"
    if pattern == 1:
        return f"The {_pick(rng, _SH_NOUNS)} of {_pick(rng, _SH_NOUNS)} is but {end}"
    return f"{_pick(rng, _SH_OPEN)} 'tis thy {_pick(rng, _SH_NOUNS)} that I {_pick(rng, ('behold', 'forsake', 'adore'))} ere {end}"


def verse_document(rng: Rng) -> str:
    """One speech: 'NAME:' and rhymed couplets, lines joined by ' / ' on one line."""
    lines = []
    for _ in range(rng.randint(1, 3)):
        a, b = rng.sample(_pick(rng, _SH_RHYMES), 2)
        lines += [_sh_line(rng, a) + ",", _sh_line(rng, b) + _pick(rng, (".", "!", ";", "?"))]
    return f"{_pick(rng, _SH_SPEAKERS)}: " + " / ".join(lines)


# ---- the table and the files -------------------------------------------------------------
DOMAINS: dict[str, Callable[[Rng], str]] = {
    "tinycodes": code_document,
    "tinystories": story_document,
    "tinytextbooks": textbook_document,
    "tinywebtext": web_document,
    "wikitext": wiki_document,
    "shakespeare_all": verse_document,
}


def _rng(domain: str, seed: int) -> Rng:
    if domain not in DOMAINS:
        raise ValueError(f"unknown text domain '{domain}' (known: {', '.join(DOMAINS)})")
    return random.Random(f"repr_sim.textgen:{domain}:{int(seed)}")


def generate(domain: str, n_chars: int, *, seed: int = 0) -> list[str]:
    """Documents of `domain` until their total length reaches `n_chars` (at least 2)."""
    if n_chars < 1:
        raise ValueError(f"n_chars must be positive, got {n_chars}")
    rng, make = _rng(domain, seed), DOMAINS[domain]
    docs, total = [], 0
    while total < n_chars or len(docs) < 2:
        doc = make(rng)
        docs.append(doc)
        total += len(doc) + 1
    return docs


def render(domain: str, docs: list[str]) -> str:
    """The file text: one document per line; shakespeare_all as speeches in the layout of
    the study's input.txt (speaker line, verse lines, blank line between speeches)."""
    if domain == "shakespeare_all":
        speeches = []
        for doc in docs:
            speaker, _, verse = doc.partition(": ")
            speeches.append(speaker + ":\n" + verse.replace(" / ", "\n"))
        return "\n\n".join(speeches) + "\n"
    return "\n".join(docs) + "\n"


def write_corpora(folder: str | Path, n_chars: int = 200_000, *, seed: int = 0,
                  domains=None) -> dict[str, Path]:
    """Write <folder>/<corpus>.txt for every domain; returns {corpus: path}."""
    folder = Path(folder)
    out = {}
    for domain in domains or DOMAINS:
        path = folder / f"{domain}.txt"
        atomic_write_text(path, render(domain, generate(domain, n_chars, seed=seed)))
        out[domain] = path
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repr_sim.data.textgen",
        description="write the six generated text domains as <out>/<corpus>.txt")
    parser.add_argument("out", help="output folder")
    parser.add_argument("--chars", type=int, default=200_000, help="characters per domain (default 200000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--domains", nargs="+", choices=list(DOMAINS), default=None)
    args = parser.parse_args(argv)
    for domain, path in write_corpora(args.out, args.chars, seed=args.seed, domains=args.domains).items():
        print(f"{domain}: {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
