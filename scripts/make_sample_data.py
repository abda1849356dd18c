"""Writes the built-in sample data in llmkit/sample_data/ (committed; rerun only to change it).

    python scripts/make_sample_data.py

A small, learnable sentiment task about restaurants, hotels and films, written from a grammar:
aspects, adjectives, intensifiers, and negation that flips the label ("was not great" -> negative),
so a model must read word order, not just look words up. Plus an unlabelled corpus of the same
domain (one multi-sentence document per line) for masked-LM pretraining.
"""

import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "llmkit" / "sample_data"

ASPECTS = {
    "restaurant": ["the food", "the service", "the pasta", "our waiter", "the soup", "the dessert", "the coffee",
                   "the wine list", "the pizza", "the staff", "the menu", "the bread", "the steak", "the salad"],
    "hotel": ["the room", "the bed", "the view", "the breakfast", "the pool", "the reception", "the location",
              "the shower", "the hotel", "the lobby"],
    "film": ["the movie", "the plot", "the acting", "the soundtrack", "the ending", "the script", "the director",
             "the cast", "the dialogue", "the camera work"],
}
POSITIVE = ["delicious", "wonderful", "excellent", "friendly", "amazing", "great", "superb", "charming", "fresh",
            "brilliant", "lovely", "fantastic", "perfect", "delightful", "good", "pleasant", "memorable", "clean"]
NEGATIVE = ["bland", "terrible", "awful", "rude", "boring", "cold", "disappointing", "slow", "stale", "dull",
            "horrible", "mediocre", "bad", "noisy", "dirty", "forgettable", "greasy", "painful"]
INTENSIFIERS = ["", "", "really ", "very ", "quite ", "truly ", "incredibly ", "pretty ", "absolutely "]
OPENERS = ["", "", "honestly , ", "overall , ", "to be fair , ", "i have to say ", "sadly , ", "frankly , "]
CLOSERS = {True: ["", "", " , i would come back", " , highly recommended", " , we loved it", " , worth every penny"],
           False: ["", "", " , i would not come back", " , not recommended", " , what a waste", " , never again"]}
NEUTRAL = ["we arrived on a tuesday evening .", "it was our second visit .", "the place was busy .",
           "we went with some friends .", "i watched it last weekend .", "it is close to the station .",
           "the prices are average for the area .", "we booked a table for four .", "it runs for two hours ."]


def sentence(rng: random.Random, domain: str, positive: bool) -> str:
    """One review sentence whose sentiment is `positive`."""
    aspect = rng.choice(ASPECTS[domain])
    negated = rng.random() < 0.25
    adjective = rng.choice(POSITIVE if positive != negated else NEGATIVE)
    verb = rng.choice(["was", "is", "felt", "seemed"])
    core = f"{aspect} {verb} {'not ' if negated else ''}{rng.choice(INTENSIFIERS) if not negated else ''}{adjective}"
    if rng.random() < 0.3:
        other = rng.choice([a for a in ASPECTS[domain] if a != aspect])
        core += f" and {other} was {rng.choice(INTENSIFIERS)}{rng.choice(POSITIVE if positive else NEGATIVE)}"
    return f"{rng.choice(OPENERS)}{core}{rng.choice(CLOSERS[positive])} ."


def review(rng: random.Random) -> tuple[str, str]:
    positive = rng.random() < 0.5
    return sentence(rng, rng.choice(list(ASPECTS)), positive), "positive" if positive else "negative"


def document(rng: random.Random) -> str:
    domain = rng.choice(list(ASPECTS))
    parts = []
    for _ in range(rng.randint(3, 8)):
        parts.append(rng.choice(NEUTRAL) if rng.random() < 0.25 else sentence(rng, domain, rng.random() < 0.5))
    return " ".join(parts)


def main() -> None:
    rng = random.Random(20261123)
    OUT.mkdir(parents=True, exist_ok=True)
    seen = set()
    for split, size in (("train", 2000), ("dev", 300), ("test", 300)):
        rows = []
        while len(rows) < size:
            text, label = review(rng)
            if text not in seen:  # no sentence is in two splits
                seen.add(text)
                rows.append(f"{text}\t{label}")
        (OUT / f"sentiment_{split}.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    (OUT / "corpus.txt").write_text("\n".join(document(rng) for _ in range(1500)) + "\n")


if __name__ == "__main__":
    main()
