"""Write the synthetic sentence-pair sample (train.csv, dev.csv) next to this file. Deterministic.

    python recipes/data/pairs/make_pairs.py

Each row is `sentence1,sentence2,label` with label `equivalent` (the two sentences report the same event,
reworded) or `not_equivalent` (one fact changed: who, what was done, to what, or when; or another event).
Rewordings swap in synonyms, move the time phrase and switch to the passive, so word overlap alone
does not give the answer. Half the negatives are hard (every word kept but one fact), half report
another event altogether.

The point is an offline sample that exercises the sentence-pair path ([CLS] A [SEP] B [SEP], segment
ids 0/1) end to end in seconds, not a benchmark: the real task is GLUE MRPC (recipes/mrpc.toml).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 13
N_TRAIN, N_DEV = 200, 60

SUBJECTS = [
    ("the city council", ["the council", "city officials"]),
    ("the company", ["the firm", "the business"]),
    ("the research team", ["the researchers", "the scientists"]),
    ("the school board", ["the board", "school officials"]),
    ("the hospital", ["the clinic", "hospital managers"]),
    ("the airline", ["the carrier", "airline executives"]),
    ("the museum", ["museum staff", "the gallery"]),
    ("the football club", ["the club", "the team's owners"]),
]
# verb -> rewordings; verbs in one group mean the same, other groups mean something else
VERBS = [
    ("approved", ["gave the green light to", "signed off on"]),
    ("rejected", ["turned down", "voted against"]),
    ("postponed", ["delayed", "put off"]),
    ("cancelled", ["called off", "scrapped"]),
    ("announced", ["made public", "unveiled"]),
    ("criticised", ["spoke out against", "found fault with"]),
]
OBJECTS = [
    "the new budget",
    "a plan for a park",
    "the merger",
    "its spring exhibition",
    "higher ticket prices",
    "a hiring freeze",
    "the annual report",
    "a bridge repair",
    "a new safety policy",
    "the summer festival",
]
PLURAL_OBJECTS = {"higher ticket prices"}
TIMES = [
    ("on Monday", ["on Monday"]),
    ("on Friday", ["on Friday"]),
    ("last week", ["a week ago", "last week"]),
    ("in March", ["in March"]),
    ("this morning", ["earlier today", "this morning"]),
    ("after a long debate", ["following lengthy discussion", "after hours of debate"]),
]


def cap(text: str) -> str:
    return text[0].upper() + text[1:]


def render(subject: str, verb: str, obj: str, time: str) -> str:
    return f"{cap(subject)} {verb} {obj} {time}."


def reword(rng: random.Random, s: int, v: int, o: int, t: int) -> str:
    """The same event in other words."""
    subject = rng.choice(SUBJECTS[s][1])
    verb_base, verb_alts = VERBS[v]
    time = rng.choice(TIMES[t][1])
    obj = OBJECTS[o]
    style = rng.randrange(3)
    if style == 0:  # passive voice with the original verb
        be = "were" if obj in PLURAL_OBJECTS else "was"
        return f"{cap(obj)} {be} {verb_base} by {subject} {time}."
    verb = rng.choice(verb_alts)
    if style == 1:  # time phrase first
        return f"{cap(time)}, {subject} {verb} {obj}."
    return render(subject, verb, obj, time)


def change_one_fact(rng: random.Random, s: int, v: int, o: int, t: int) -> tuple[int, int, int, int]:
    slot = rng.randrange(4)
    if slot == 0:
        s = rng.choice([i for i in range(len(SUBJECTS)) if i != s])
    elif slot == 1:
        v = rng.choice([i for i in range(len(VERBS)) if i != v])
    elif slot == 2:
        o = rng.choice([i for i in range(len(OBJECTS)) if i != o])
    else:
        t = rng.choice([i for i in range(len(TIMES)) if i != t and TIMES[i][1] != TIMES[t][1]])
    return s, v, o, t


def make_rows(rng: random.Random, events: list[tuple[int, int, int, int]]) -> list[dict[str, str]]:
    rows = []
    for i, event in enumerate(events):
        s, v, o, t = event
        first = render(SUBJECTS[s][0], VERBS[v][0], OBJECTS[o], TIMES[t][0])
        if i % 2 == 0:
            second, label = reword(rng, *event), "equivalent"
        elif rng.random() < 0.5:
            # a hard negative: one fact differs, and it may be reworded as well
            other = change_one_fact(rng, *event)
            second = reword(rng, *other) if rng.random() < 0.5 else render(SUBJECTS[other[0]][0], VERBS[other[1]][0], OBJECTS[other[2]], TIMES[other[3]][0])
            label = "not_equivalent"
        else:
            other = (rng.randrange(len(SUBJECTS)), rng.randrange(len(VERBS)), rng.randrange(len(OBJECTS)), rng.randrange(len(TIMES)))
            while other == event:
                other = (rng.randrange(len(SUBJECTS)), rng.randrange(len(VERBS)), rng.randrange(len(OBJECTS)), rng.randrange(len(TIMES)))
            second, label = reword(rng, *other), "not_equivalent"
        rows.append({"sentence1": first, "sentence2": second, "label": label})
    return rows


def main() -> None:
    rng = random.Random(SEED)
    every_event = [(s, v, o, t) for s in range(len(SUBJECTS)) for v in range(len(VERBS)) for o in range(len(OBJECTS)) for t in range(len(TIMES))]
    # distinct events per split, so no first sentence of dev appears in train
    events = rng.sample(every_event, N_TRAIN + N_DEV)
    train = make_rows(rng, events[:N_TRAIN])
    dev = make_rows(rng, events[N_TRAIN:])
    rng.shuffle(train)
    rng.shuffle(dev)
    for name, rows in (("train.csv", train), ("dev.csv", dev)):
        with open(HERE / name, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["sentence1", "sentence2", "label"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {HERE / name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
