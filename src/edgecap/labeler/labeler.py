"""Rule-based, weight-free findings labeler: a *proxy* for the CheXpert labeler.

It labels a chest radiograph report for the 14 CheXpert observations as positive (1), negative (0),
uncertain (-1) or not mentioned (None). It is pure Python (``re`` only) and needs no parser model and
no downloaded weights, so it runs on the device and on CI. It is NOT the CheXpert labeler (which needs
a dependency parser): scores computed with it must be called "rule-based labeler (CheXpert-proxy)
F1", never "CheXpert F1".

All vocabulary lives in the JSON files under ``rules/``:

* ``observations.json``: mention phrases, exclusions and attribute rules ("heart size" + "enlarged")
  per observation;
* ``modifiers.json``: negation / uncertainty triggers (before and after a mention), pseudo-negations,
  clause terminators, scope breakers, windows, the disjunction rule and the sentence splitter;
* ``no_finding.json``: the No Finding rule and the "other findings" that also rule it out.

Pipeline, per report (:meth:`Labeler._analyse`, one method per stage):

1. read: lower-case and neutralise the IU X-Ray ``XXXX`` anonymisation tokens, split the text into
   sentences and clauses, and find every trigger and mention in one regex pass (each phrase list compiled
   as a character trie, see :mod:`.phrases`);
2. find triggers: where triggers overlap the longest wins, so "cannot exclude" is uncertainty and not the
   negation "not"; pseudo-negations ("no change") only hide the triggers inside them;
3. find mentions: plain phrases ("pneumothorax") and attribute pairs ("heart size ... enlarged", whose
   qualifier may fix the label: "heart size is normal" is negative);
4. apply scope: a trigger of the same clause within its window labels the mention (negation wins over
   uncertainty, as in the CheXpert labeler); then reclassifiers ("calcified nodule" is no Lung Lesion) and
   disjunctions ("atelectasis or scarring" is uncertain);
5. resolve per observation (positive > uncertain > negative) and derive No Finding.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

from . import regex_cache
from .phrases import MultiMatcher, Span, compile_phrases, overlaps, spans

if TYPE_CHECKING:  # Python 3.11+ only, annotations only
    from importlib.resources.abc import Traversable

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
NO_FINDING = "No Finding"
OTHER = "(other finding)"  # pseudo-observation: abnormalities outside the 14, used for No Finding

_WORD_RE = re.compile(r"[a-z0-9]+(?:['][a-z]+)?")
_XXXX_RE = re.compile(r"x{3,}", re.IGNORECASE)
_SPACE_RE = re.compile(r"[ \t\r\f\v]+")

# tie-break between overlapping triggers of equal length (lower first)
_TRIGGER_ORDER = {"pseudo": 0, "uncertain_pre": 1, "uncertain_post": 2, "negation_pre": 3, "negation_post": 4}
# a qualifier kind of an attribute rule -> the label it gives its subject (None: scope decides)
_QUALIFIER_LABEL = {"abnormal": None, "normal": NEGATIVE, "uncertain": UNCERTAIN}
# at most this many words between two mentions joined by a disjunction word
_DISJUNCTION_GAP = 3


# --------------------------------------------------------------------------- data classes
@dataclass(frozen=True)
class Trigger:
    """A negation / uncertainty trigger phrase at text offsets [start, end)."""

    kind: str  # "pseudo", "negation_pre", "negation_post", "uncertain_pre", "uncertain_post", "normal", "uncertain"
    start: int
    end: int
    text: str


@dataclass
class Mention:
    """A mention of ``observation`` at text offsets [start, end), with its label and the trigger behind it.

    ``clause`` is the clause index used for scope; ``fixed`` mentions keep their label whatever the triggers.
    """

    observation: str
    start: int
    end: int
    text: str
    label: int = POSITIVE
    trigger: str | None = None
    trigger_kind: str | None = None
    clause: int = -1
    fixed: bool = False  # label decided by an attribute qualifier ("heart size is normal")

    def as_dict(self, sentence: str = "") -> dict:
        """The evidence entry of :meth:`Labeler.explain`: phrase, label, trigger, kind (and sentence)."""
        d = {"phrase": self.text, "label": self.label, "trigger": self.trigger, "trigger_kind": self.trigger_kind}
        if sentence:
            d["sentence"] = sentence
        return d


@dataclass
class _Attribute:
    subjects: re.Pattern
    abnormal: re.Pattern | None
    normal: re.Pattern | None
    uncertain: re.Pattern | None
    window: int


@dataclass
class _ObsRules:
    name: str
    mentions: re.Pattern | None
    exclude: re.Pattern | None
    attributes: list[_Attribute] = field(default_factory=list)
    reclassify: re.Pattern | None = None  # nearby phrase that turns the mention into `reclassify_to`
    reclassify_to: str = OTHER
    reclassify_window: int = 4


Qualifier = tuple[int, int, str]  # (start, end, kind): kind is a key of _QUALIFIER_LABEL


def _any_between(points: list[int], a: int, b: int) -> bool:
    """Whether the sorted offsets ``points`` hold one in [a, b)."""
    i = bisect_left(points, a)
    return i < len(points) and points[i] < b


@dataclass
class _Report:
    """One normalised report and the lookups that every analysis stage shares.

    ``text``: the normalised report; ``clause_starts``: sorted offsets where a clause starts (after a
    sentence end, at a clause terminator); ``sentences``: (start, end) of each sentence; ``word_starts``:
    sorted offsets of the words that count towards scope windows (anonymisation tokens do not);
    ``commas``: sorted comma offsets; ``matches``: ``id(regex)`` -> match spans from the one-pass phrase
    scan; ``scope_breaks`` / ``comma_breaks``: sorted offsets of the phrases that end a pre-negation's scope.
    """

    text: str
    clause_starts: list[int]
    sentences: list[Span]
    word_starts: list[int]
    commas: list[int]
    matches: dict[int, list[Span]]
    scope_breaks: list[int] = field(default_factory=list)
    comma_breaks: list[int] = field(default_factory=list)

    def clause_of(self, pos: int) -> int:
        """Index of the clause that holds offset ``pos``."""
        return bisect_right(self.clause_starts, pos) - 1

    def nwords(self, a: int, b: int) -> int:
        """Number of counted words that start in [a, b); 0 when ``b <= a``."""
        if b <= a:
            return 0
        return bisect_left(self.word_starts, b) - bisect_left(self.word_starts, a)

    def spans(self, rx: re.Pattern | None) -> list[Span]:
        """Match spans of ``rx``: from the one-pass scan, or by running ``rx`` where the scan lacks it."""
        if rx is None:
            return []
        got = self.matches.get(id(rx))
        return got if got is not None else spans(rx, self.text)


def _resolve_triggers(candidates: list[Trigger]) -> list[Trigger]:
    """Overlapping trigger matches -> the triggers that count, pseudo-negations removed.

    The longest of overlapping triggers wins (a pseudo-negation first on equal length, then by
    ``_TRIGGER_ORDER``), so "cannot exclude" hides "not" and "no change" hides "no". The same span is
    kept twice when it is a trigger of two non-pseudo kinds ("versus" is both pre and post uncertainty).
    """
    ranked = sorted(candidates, key=lambda tr: (-(tr.end - tr.start), _TRIGGER_ORDER[tr.kind], tr.start))
    taken: list[Span] = []
    kept: list[Trigger] = []
    for tr in ranked:
        if overlaps((tr.start, tr.end), taken):
            if any(tr.start == o.start and tr.end == o.end and tr.kind != o.kind and o.kind != "pseudo" for o in kept):
                kept.append(tr)
            continue
        taken.append((tr.start, tr.end))
        kept.append(tr)
    return [tr for tr in kept if tr.kind != "pseudo"]


def _qualifiers(doc: _Report, attr: _Attribute) -> list[Qualifier]:
    """The attribute's qualifiers found in the report, as (start, end, kind), kind in _QUALIFIER_LABEL.

    A qualifier inside a longer qualifier of another kind ("enlarged" in "not enlarged") is dropped.
    """
    quals: list[Qualifier] = []
    for kind, rx in (("abnormal", attr.abnormal), ("normal", attr.normal), ("uncertain", attr.uncertain)):
        quals.extend((s, e, kind) for s, e in doc.spans(rx))
    return [
        q
        for q in quals
        if not any(o[2] != q[2] and o[0] <= q[0] and q[1] <= o[1] and (o[1] - o[0]) > (q[1] - q[0]) for o in quals)
    ]


def _nearest_qualifier(doc: _Report, subject: Span, quals: list[Qualifier], window: int) -> Qualifier | None:
    """The qualifier closest in words to ``subject`` in the same clause, at most ``window`` words away.

    A qualifier before its subject is adjectival ("enlarged heart"): no comma may stand between them.
    Returns None where no qualifier fits; on equal distance the first of ``quals`` wins.
    """
    s, e = subject
    clause = doc.clause_of(s)
    best: Qualifier | None = None
    best_dist = 0
    for q in quals:
        qs, qe, _ = q
        if doc.clause_of(qs) != clause or overlaps((qs, qe), [subject]):
            continue
        if qs >= e:
            dist = doc.nwords(e, qs)
        else:
            dist = doc.nwords(qe, s)
            if _any_between(doc.commas, qe, s):
                continue
        if dist <= window and (best is None or dist < best_dist):
            best, best_dist = q, dist
    return best


def _attribute_mention(doc: _Report, observation: str, subject: Span, qual: Qualifier) -> Mention:
    """The mention spanning a subject and its qualifier; "normal" / "uncertain" qualifiers fix its label."""
    (s, e), (qs, qe, kind) = subject, qual
    a, b = min(s, qs), max(e, qe)
    label = _QUALIFIER_LABEL[kind]
    if label is None:
        return Mention(observation, a, b, doc.text[a:b], clause=doc.clause_of(s))
    return Mention(observation, a, b, doc.text[a:b], label, doc.text[qs:qe], kind, doc.clause_of(s), fixed=True)


def _outside_triggers(mentions: list[Mention], triggers: list[Trigger]) -> list[Mention]:
    """``mentions`` less those lying inside a trigger phrase (the phrase is a trigger, not a finding)."""
    trig_spans = [(tr.start, tr.end) for tr in triggers]
    return [m for m in mentions if not any(ts <= m.start and m.end <= te for ts, te in trig_spans)]


def _sentence_at(text: str, sentences: list[Span], pos: int) -> str:
    """The stripped sentence of ``text`` that holds offset ``pos`` ("" if none)."""
    for s, e in sentences:
        if s <= pos <= e:
            return text[s:e].strip()
    return ""


# --------------------------------------------------------------------------- the labeler
class Labeler:
    """Negation- and uncertainty-aware rule labeler over the 14 CheXpert observations.

    >>> lab = Labeler.default()
    >>> lab.label("No pneumothorax or pleural effusion.")["Pleural Effusion"]
    0
    """

    def __init__(self, observations: Mapping, modifiers: Mapping, no_finding: Mapping):
        self.rules_raw = {"observations": observations, "modifiers": modifiers, "no_finding": no_finding}
        missing = [o for o in OBSERVATIONS if o != NO_FINDING and o not in observations]
        if missing:
            raise ValueError(f"labeler rules lack observations: {missing}")
        self._obs = self._compile_observations(observations, no_finding)
        self._nf_ignore = set(no_finding.get("ignore", ["Support Devices"]))
        self._nf_empty = no_finding.get("label_when_empty", None)
        self._compile_modifiers(modifiers)
        self._multi = MultiMatcher(self._phrase_patterns())
        regex_cache.save()  # the next process builds these regexes from their opcodes (regex_cache)

    # ---------------------------------------------------------------- construction
    def _compile_observations(self, observations: Mapping, no_finding: Mapping) -> list[_ObsRules]:
        """Rules of the 13 observations other than No Finding, in ``OBSERVATIONS`` order, then of
        ``OTHER`` (the no_finding.json "other findings", which only rule out No Finding)."""
        obs = [self._compile_obs(name, observations[name]) for name in OBSERVATIONS if name != NO_FINDING]
        obs.append(
            self._compile_obs(
                OTHER,
                {
                    "mentions": no_finding.get("other_findings", []),
                    "exclude": no_finding.get("exclude", []),
                    "attributes": no_finding.get("attributes", []),
                },
            )
        )
        return obs

    def _compile_modifiers(self, m: Mapping) -> None:
        """modifiers.json -> the sentence splitter, clause / scope breakers, windows and trigger regexes."""
        self._anon = str(m.get("anonymisation_token", "xxxx")).lower()
        self._sent_rx = regex_cache.compile(m.get("sentence_split", r"[.?!;](?=\s|$)|\n+"))
        self._clause_rx = compile_phrases(m.get("clause_terminators", []))
        self._scope_break_rx = compile_phrases(m.get("scope_breakers", []))
        breakers = compile_phrases(m.get("comma_breakers", []))
        self._comma_break_rx = regex_cache.compile(r",\s*" + breakers.pattern) if breakers is not None else None
        self._pre_window = int(m.get("pre_window", 14))
        self._post_window = int(m.get("post_window", 8))
        self._trigger_rx = {
            kind: compile_phrases(m.get(kind, []))
            for kind in ("pseudo", "uncertain_pre", "uncertain_post", "negation_pre", "negation_post")
        }
        self._disj_word_rx = compile_phrases(m.get("disjunction", []))

    def _phrase_patterns(self) -> list[re.Pattern | None]:
        """Every phrase regex that the one-pass scan of :class:`MultiMatcher` runs over a report."""
        pats: list[re.Pattern | None] = [self._scope_break_rx, *self._trigger_rx.values()]
        for ob in self._obs:
            pats += [ob.mentions, ob.exclude, ob.reclassify]
            for a in ob.attributes:
                pats += [a.subjects, a.abnormal, a.normal, a.uncertain]
        return pats

    @staticmethod
    def _compile_obs(name: str, spec: Mapping) -> _ObsRules:
        """One observation's spec (mentions, exclude, attributes, reclassify) -> its compiled rules."""
        attrs = []
        for a in spec.get("attributes", []) or []:
            subj = compile_phrases(a.get("subjects", []))
            if subj is None:
                continue
            attrs.append(
                _Attribute(
                    subjects=subj,
                    abnormal=compile_phrases(a.get("abnormal", [])),
                    normal=compile_phrases(a.get("normal", [])),
                    uncertain=compile_phrases(a.get("uncertain", [])),
                    window=int(a.get("window", 6)),
                )
            )
        rec = spec.get("reclassify") or {}
        if rec.get("to", OTHER) not in OBSERVATIONS + (OTHER,):
            raise ValueError(f"{name}: reclassify target {rec.get('to')!r} is not an observation")
        return _ObsRules(
            name,
            compile_phrases(spec.get("mentions", [])),
            compile_phrases(spec.get("exclude", [])),
            attrs,
            compile_phrases(rec.get("phrases", [])),
            rec.get("to", OTHER),
            int(rec.get("window", 4)),
        )

    @classmethod
    def from_dir(cls, rules_dir: str | Path) -> Labeler:
        """The labeler built from ``observations.json``, ``modifiers.json`` and ``no_finding.json`` in a folder."""
        return cls(*_load_rules(Path(rules_dir)))

    @classmethod
    def default(cls) -> Labeler:
        """The labeler built from the rule files shipped in ``edgecap/labeler/rules`` (cached)."""
        return _default_labeler()

    # ---------------------------------------------------------------- text handling
    def normalise(self, text: str) -> str:
        """Lower-case, unify whitespace, replace anonymisation tokens (XXXX) by one neutral token."""
        t = (text or "").replace("\u00a0", " ")
        t = _XXXX_RE.sub(self._anon, t)
        t = _SPACE_RE.sub(" ", t).lower()
        return t

    def _segments(self, t: str) -> tuple[list[int], list[Span]]:
        """Clause start offsets (sorted) and sentence spans."""
        cuts = {0}
        sent_spans = []
        last = 0
        for m in self._sent_rx.finditer(t):
            sent_spans.append((last, m.start()))
            last = m.end()
            cuts.add(m.end())
        sent_spans.append((last, len(t)))
        if self._clause_rx is not None:
            for m in self._clause_rx.finditer(t):
                cuts.add(m.start())
        return sorted(cuts), sent_spans

    # ---------------------------------------------------------------- analysis stages
    def _analyse(self, text: str) -> tuple[str, list[Mention], list[Span]]:
        """Report -> (normalised text, its labelled mentions sorted by start, sentence spans)."""
        t = self.normalise(text)
        if not t.strip():
            return t, [], []
        doc = self._read(t)
        triggers = self._find_triggers(doc)
        mentions = self._find_mentions(doc)
        mentions += self._find_attribute_mentions(doc, mentions)
        mentions = _outside_triggers(mentions, triggers)
        reclassifiers = self._find_reclassifiers(doc)
        self._apply_scope(doc, mentions + [r for _, r in reclassifiers], triggers)
        self._apply_reclassifiers(doc, reclassifiers, mentions)
        self._apply_disjunction(doc, mentions)
        mentions.sort(key=lambda x: (x.start, x.observation))
        return t, mentions, doc.sentences

    def _read(self, t: str) -> _Report:
        """Normalised text -> a :class:`_Report`: clauses, sentences, counted words, commas, phrase matches."""
        clause_starts, sentences = self._segments(t)
        doc = _Report(
            t,
            clause_starts,
            sentences,
            word_starts=[m.start() for m in _WORD_RE.finditer(t) if m.group() != self._anon],
            commas=[i for i, ch in enumerate(t) if ch == ","],
            matches=self._multi.scan(t),
        )
        doc.scope_breaks = [s for s, _ in doc.spans(self._scope_break_rx)]
        doc.comma_breaks = [s for s, _ in doc.spans(self._comma_break_rx)]
        return doc

    def _find_triggers(self, doc: _Report) -> list[Trigger]:
        """The negation and uncertainty triggers of the report, overlaps resolved by :func:`_resolve_triggers`."""
        return _resolve_triggers(
            [Trigger(kind, s, e, doc.text[s:e]) for kind, rx in self._trigger_rx.items() for s, e in doc.spans(rx)]
        )

    def _find_mentions(self, doc: _Report) -> list[Mention]:
        """Plain mentions (positive, unscoped yet), per observation in rule order; excluded phrases dropped."""
        mentions: list[Mention] = []
        for ob in self._obs:
            found = doc.spans(ob.mentions)
            if not found:
                continue
            excl = doc.spans(ob.exclude)
            mentions.extend(
                Mention(ob.name, s, e, doc.text[s:e], clause=doc.clause_of(s))
                for s, e in found
                if not (excl and overlaps((s, e), excl))
            )
        return mentions

    def _find_attribute_mentions(self, doc: _Report, plain: list[Mention]) -> list[Mention]:
        """Mentions made of an attribute subject and its nearest qualifier ("heart size ... enlarged").

        A subject inside a plain mention (``plain``, from :meth:`_find_mentions`) or an excluded phrase is
        skipped; a subject without a qualifier in reach is no mention.
        """
        plain_spans = [(m.start, m.end) for m in plain]
        mentions: list[Mention] = []
        for ob in self._obs:
            for attr in ob.attributes:
                subjects = doc.spans(attr.subjects)
                if not subjects:
                    continue
                excl = doc.spans(ob.exclude)
                quals = _qualifiers(doc, attr)
                for subject in subjects:
                    if overlaps(subject, plain_spans) or (excl and overlaps(subject, excl)):
                        continue
                    qual = _nearest_qualifier(doc, subject, quals, attr.window)
                    if qual is not None:
                        mentions.append(_attribute_mention(doc, ob.name, subject, qual))
        return mentions

    def _find_reclassifiers(self, doc: _Report) -> list[tuple[_ObsRules, Mention]]:
        """Reclassifier phrases ("calcified"), each as a pseudo-mention with the observation rules it acts on.

        They are mentions so that scope applies to them as well: "not calcified" reclassifies nothing.
        """
        return [
            (ob, Mention("__reclassify__", s, e, doc.text[s:e], clause=doc.clause_of(s)))
            for ob in self._obs
            for s, e in doc.spans(ob.reclassify)
        ]

    def _apply_scope(self, doc: _Report, mentions: list[Mention], triggers: list[Trigger]) -> None:
        """Label, in place, each mention not fixed by a qualifier by the triggers that have it in scope.

        Only triggers of the mention's clause count. The closest negation in scope makes it negative;
        failing that, the closest uncertainty trigger makes it uncertain; otherwise it stays positive.
        """
        by_clause: dict[int, list[Trigger]] = {}
        for tr in triggers:
            by_clause.setdefault(doc.clause_of(tr.start), []).append(tr)
        for m in mentions:
            if m.fixed:
                continue
            in_clause = by_clause.get(m.clause, [])
            neg = self._closest_in_scope(doc, m, in_clause, "negation")
            if neg is not None:
                m.label, m.trigger, m.trigger_kind = NEGATIVE, neg.text, neg.kind
                continue
            unc = self._closest_in_scope(doc, m, in_clause, "uncertain")
            if unc is not None:
                m.label, m.trigger, m.trigger_kind = UNCERTAIN, unc.text, unc.kind

    def _closest_in_scope(self, doc: _Report, m: Mention, triggers: list[Trigger], family: str) -> Trigger | None:
        """Of ``triggers`` whose kind starts with ``family``, the one nearest ``m`` that has it in scope.

        On equal distance the first of ``triggers`` wins; None where none has ``m`` in scope.
        """
        best: Trigger | None = None
        best_d = 0
        for tr in triggers:
            if not tr.kind.startswith(family):
                continue
            d = self._scope_distance(doc, tr, m)
            if d is not None and (best is None or d < best_d):
                best, best_d = tr, d
        return best

    def _scope_distance(self, doc: _Report, tr: Trigger, m: Mention) -> int | None:
        """Words between trigger ``tr`` and mention ``m`` where ``m`` is in its scope, else None.

        A trigger inside the mention ("heart is not enlarged") is at distance 0. A ``*_pre`` trigger reaches
        ``pre_window`` words forward, and a pre-negation stops at a scope breaker or a comma breaker. A
        ``*_post`` trigger reaches ``post_window`` words back and stops at a comma.
        """
        if m.start <= tr.start and tr.end <= m.end:
            return 0
        if tr.kind.endswith("_pre"):
            if tr.end > m.start:
                return None
            d = doc.nwords(tr.end, m.start)
            if d > self._pre_window:
                return None
            if tr.kind.startswith("negation") and (
                _any_between(doc.scope_breaks, tr.end, m.start) or _any_between(doc.comma_breaks, tr.end, m.start)
            ):
                return None
            return d
        if tr.start < m.end:
            return None
        d = doc.nwords(m.end, tr.start)
        if d > self._post_window or _any_between(doc.commas, m.end, tr.start):
            return None
        return d

    @staticmethod
    def _apply_reclassifiers(
        doc: _Report, reclassifiers: list[tuple[_ObsRules, Mention]], mentions: list[Mention]
    ) -> None:
        """Move, in place, the mentions near a reclassifier to its target observation.

        "calcified right upper lobe nodule" is a granuloma, not a Lung Lesion: a mention of the rules'
        observation in the reclassifier's clause, within ``reclassify_window`` words, becomes
        ``reclassify_to``, with the reclassifier as its trigger. A negated reclassifier does nothing.
        """
        for ob, sup in reclassifiers:
            if sup.label == NEGATIVE:
                continue
            for m in mentions:
                if m.observation != ob.name or m.clause != sup.clause:
                    continue
                gap = doc.nwords(sup.end, m.start) if sup.end <= m.start else doc.nwords(m.end, sup.start)
                if gap <= ob.reclassify_window:
                    m.observation = ob.reclassify_to
                    m.trigger, m.trigger_kind = sup.text, "reclassified"

    def _apply_disjunction(self, doc: _Report, mentions: list[Mention]) -> None:
        """Make, in place, both sides of "atelectasis or scarring" uncertain unless negated or fixed.

        Two neighbouring mentions of one clause count when a disjunction word stands in the at most
        ``_DISJUNCTION_GAP`` words between them.
        """
        if self._disj_word_rx is None or not mentions:
            return
        ms = sorted(mentions, key=lambda x: (x.start, -x.end))
        for a, b in pairwise(ms):
            if a.clause != b.clause or b.start < a.end or doc.nwords(a.end, b.start) > _DISJUNCTION_GAP:
                continue
            word = self._disj_word_rx.search(doc.text[a.end : b.start])
            if word is None:
                continue
            for x in (a, b):
                if x.label == POSITIVE and not x.fixed:
                    x.label, x.trigger, x.trigger_kind = UNCERTAIN, word.group(), "disjunction"

    # ---------------------------------------------------------------- per observation
    @staticmethod
    def _aggregate(labels: list[int]) -> int | None:
        """One observation's mention labels -> its label: positive > uncertain > negative; None if none."""
        if not labels:
            return None
        if POSITIVE in labels:
            return POSITIVE
        if UNCERTAIN in labels:
            return UNCERTAIN
        return NEGATIVE

    def _no_finding_blockers(self, mentions: list[Mention]) -> list[str]:
        """Sorted observations (outside ``ignore``) with a positive or uncertain mention: they rule out No Finding."""
        return sorted(
            {
                m.observation
                for m in mentions
                if m.observation not in self._nf_ignore and m.label in (POSITIVE, UNCERTAIN)
            }
        )

    def _no_finding(self, t: str, mentions: list[Mention]) -> int | None:
        """No Finding: ``label_when_empty`` for a text without words (or only XXXX tokens), positive when
        no blocker (:meth:`_no_finding_blockers`) is found, else None."""
        if not any(w != self._anon for w in _WORD_RE.findall(t)):
            return self._nf_empty
        return None if self._no_finding_blockers(mentions) else POSITIVE

    def _labels_from(self, t: str, mentions: list[Mention]) -> dict[str, int | None]:
        """Normalised text and its mentions -> the label of every observation, in ``OBSERVATIONS`` order."""
        per: dict[str, list[int]] = {}
        for m in mentions:
            per.setdefault(m.observation, []).append(m.label)
        out: dict[str, int | None] = {o: self._aggregate(per.get(o, [])) for o in OBSERVATIONS}
        out[NO_FINDING] = self._no_finding(t, mentions)
        return out

    # ---------------------------------------------------------------- public API
    def label(self, text: str) -> dict[str, int | None]:
        """Labels for the 14 observations, in ``OBSERVATIONS`` order: 1, 0, -1 or None (not mentioned)."""
        t, mentions, _ = self._analyse(text)
        return self._labels_from(t, mentions)

    def label_many(self, texts: Iterable[str]) -> list[dict[str, int | None]]:
        return [self.label(x) for x in texts]

    def explain(self, text: str) -> dict[str, dict]:
        """Per observation: the label, and the evidence behind it (matched phrase, trigger, sentence).

        ``"(other finding)"`` lists abnormalities outside the 14 observations that ruled out No Finding.
        """
        t, mentions, sentences = self._analyse(text)
        labels = self._labels_from(t, mentions)
        labels[OTHER] = self._aggregate([m.label for m in mentions if m.observation == OTHER])
        out: dict[str, dict] = {}
        for o in OBSERVATIONS + (OTHER,):
            ev = [m.as_dict(_sentence_at(t, sentences, m.start)) for m in mentions if m.observation == o]
            if o == NO_FINDING:
                ignored = ", ".join(sorted(self._nf_ignore))
                ev = [
                    {
                        "rule": f"positive when no observation except {ignored} is positive or uncertain",
                        "blocked_by": self._no_finding_blockers(mentions),
                    }
                ]
            out[o] = {"label": labels[o], "evidence": ev}
        return out


def _load_rules(root: Path | Traversable) -> tuple[dict, dict, dict]:
    """The three rule files of a rules folder, parsed: (observations, modifiers, no_finding)."""
    observations, modifiers, no_finding = (
        json.loads((root / name).read_text(encoding="utf-8"))
        for name in ("observations.json", "modifiers.json", "no_finding.json")
    )
    return observations, modifiers, no_finding


@lru_cache(maxsize=1)
def _default_labeler() -> Labeler:
    try:
        return Labeler(*_load_rules(resources.files("edgecap.labeler") / "rules"))
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"labeler rule file missing from the installed package: {e.filename}; the package must ship "
            "edgecap/labeler/rules/*.json and edgecap/labeler/mesh_map.json as package data"
        ) from e


def label_report(text: str) -> dict[str, int | None]:
    """Convenience: ``Labeler.default().label(text)``."""
    return Labeler.default().label(text)
