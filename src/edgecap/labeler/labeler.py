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

Pipeline, per report: lower-case and neutralise the IU X-Ray ``XXXX`` anonymisation tokens; find every
trigger and mention in one regex pass (each phrase list compiled as a character trie); split the text into
sentences and clauses; decide for each mention whether a trigger of the same clause has it in scope
(longest trigger wins where triggers overlap, so "cannot exclude" is uncertainty and not the negation
"not"; negation wins over uncertainty, as in the CheXpert labeler); aggregate mentions per observation
(positive > uncertain > negative); derive No Finding.
"""

from __future__ import annotations

import json
import re
import weakref
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping, Optional

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


# --------------------------------------------------------------------------- phrase compilation
_SEP = r"[\s\-/]+"


def _phrase_tokens(phrase: str) -> list[str]:
    """A phrase as trie tokens: single characters, "\x00SEP" between words, "\x00STAR" for a trailing '*'."""
    words = phrase.strip().lower().split()
    toks: list[str] = []
    for i, w in enumerate(words):
        if i:
            toks.append("\x00SEP")
        star = w.endswith("*")
        toks.extend(w[:-1] if star else w)
        if star:
            toks.append("\x00STAR")
    return toks


def _trie_regex(node: dict) -> str:
    end = "" in node
    alts = []
    # literal characters first, wildcard last: the longer literal route is tried first
    for tok in sorted((k for k in node if k), key=lambda k: (k == "\x00STAR", k == "\x00SEP", k)):
        piece = _SEP if tok == "\x00SEP" else (r"\w*" if tok == "\x00STAR" else re.escape(tok))
        alts.append(piece + _trie_regex(node[tok]))
    if not alts:
        return ""
    body = alts[0] if len(alts) == 1 and not end and len(node) == 1 else "(?:" + "|".join(alts) + ")"
    return "(?:%s)?" % body if end else body


# compiled regex -> its phrases (used to build the merged guard of _MultiMatcher)
_PHRASES: "weakref.WeakKeyDictionary[re.Pattern, tuple[str, ...]]" = weakref.WeakKeyDictionary()


def compile_phrases(phrases: Iterable[str]) -> Optional[re.Pattern]:
    """One regex for many phrases, built as a character trie (fast on long phrase lists).

    Matching is on word boundaries; where phrases share a start, the longer one is preferred.
    """
    uniq = sorted({p.strip().lower() for p in phrases if p and p.strip()})
    if not uniq:
        return None
    trie: dict = {}
    for p in uniq:
        node = trie
        for tok in _phrase_tokens(p):
            node = node.setdefault(tok, {})
        node[""] = {}
    rx = re.compile(r"(?<![\w])" + _trie_regex(trie) + r"(?![\w])")
    _PHRASES[rx] = tuple(uniq)
    return rx


_PREFIX = r"(?<![\w])"


class _MultiMatcher:
    """Runs many phrase regexes (from :func:`compile_phrases`) in one pass over the text.

    Each regex becomes a capturing lookahead tried at every word start; per regex the matches are then
    made non-overlapping left to right, which gives the same spans as ``finditer`` on that regex alone.
    """

    def __init__(self, patterns: Iterable[Optional[re.Pattern]]):
        self.patterns: list[re.Pattern] = []
        seen = set()
        for rx in patterns:
            if rx is None or id(rx) in seen or not rx.pattern.startswith(_PREFIX):
                continue
            seen.add(id(rx))
            self.patterns.append(rx)
        body = "".join("(?:(?=(%s))|)" % rx.pattern[len(_PREFIX):] for rx in self.patterns)
        # guard: one merged trie of every phrase, so that words starting no phrase are skipped in C
        self._phrases = sorted({p for rx in self.patterns for p in _PHRASES.get(rx, ())})
        guard = compile_phrases(self._phrases) if self._phrases else None
        guard_src = "(?=%s)" % guard.pattern[len(_PREFIX):] if guard is not None else r"(?=\w)"
        self.rx = re.compile(_PREFIX + guard_src + body + r"\w+")

    def scan(self, text: str) -> dict[int, list[tuple[int, int]]]:
        n = len(self.patterns)
        found: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        last_end = [-1] * n
        for m in self.rx.finditer(text):
            for i, g in enumerate(m.groups()):
                if g is not None:
                    s = m.start(i + 1)
                    if s >= last_end[i]:
                        e = m.end(i + 1)
                        found[i].append((s, e))
                        last_end[i] = e
        return {id(rx): found[i] for i, rx in enumerate(self.patterns)}


def _spans(rx: Optional[re.Pattern], text: str) -> list[tuple[int, int]]:
    if rx is None:
        return []
    return [(m.start(), m.end()) for m in rx.finditer(text)]


def _overlaps(a: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    s, e = a
    return any(s < e2 and s2 < e for s2, e2 in spans)


# --------------------------------------------------------------------------- data classes
@dataclass(frozen=True)
class Trigger:
    kind: str  # "pseudo", "negation_pre", "negation_post", "uncertain_pre", "uncertain_post", "normal", "uncertain"
    start: int
    end: int
    text: str


@dataclass
class Mention:
    observation: str
    start: int
    end: int
    text: str
    label: int = POSITIVE
    trigger: Optional[str] = None
    trigger_kind: Optional[str] = None
    clause: int = -1
    fixed: bool = False  # label decided by an attribute qualifier ("heart size is normal")

    def as_dict(self, sentence: str = "") -> dict:
        d = {
            "phrase": self.text,
            "label": self.label,
            "trigger": self.trigger,
            "trigger_kind": self.trigger_kind,
        }
        if sentence:
            d["sentence"] = sentence
        return d


@dataclass
class _Attribute:
    subjects: re.Pattern
    abnormal: Optional[re.Pattern]
    normal: Optional[re.Pattern]
    uncertain: Optional[re.Pattern]
    window: int


@dataclass
class _ObsRules:
    name: str
    mentions: Optional[re.Pattern]
    exclude: Optional[re.Pattern]
    attributes: list[_Attribute] = field(default_factory=list)
    reclassify: Optional[re.Pattern] = None  # nearby phrase that turns the mention into `reclassify_to`
    reclassify_to: str = OTHER
    reclassify_window: int = 4


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
        self._obs: list[_ObsRules] = []
        for name in OBSERVATIONS:
            if name == NO_FINDING:
                continue
            self._obs.append(self._compile_obs(name, observations[name]))
        self._obs.append(self._compile_obs(OTHER, {
            "mentions": no_finding.get("other_findings", []),
            "exclude": no_finding.get("exclude", []),
            "attributes": no_finding.get("attributes", []),
        }))
        self._nf_ignore = set(no_finding.get("ignore", ["Support Devices"]))
        self._nf_empty = no_finding.get("label_when_empty", None)

        m = modifiers
        self._anon = str(m.get("anonymisation_token", "xxxx")).lower()
        self._sent_rx = re.compile(m.get("sentence_split", r"[.?!;](?=\s|$)|\n+"))
        self._clause_rx = compile_phrases(m.get("clause_terminators", []))
        self._scope_break_rx = compile_phrases(m.get("scope_breakers", []))
        breakers = m.get("comma_breakers", [])
        self._comma_break_rx = re.compile(r",\s*" + compile_phrases(breakers).pattern) if breakers else None
        self._pre_window = int(m.get("pre_window", 14))
        self._post_window = int(m.get("post_window", 8))
        self._trigger_rx = {
            kind: compile_phrases(m.get(kind, []))
            for kind in ("pseudo", "uncertain_pre", "uncertain_post", "negation_pre", "negation_post")
        }
        self._disj_word_rx = compile_phrases(m.get("disjunction", []))

        pats: list[Optional[re.Pattern]] = [self._scope_break_rx, *self._trigger_rx.values()]
        for ob in self._obs:
            pats += [ob.mentions, ob.exclude, ob.reclassify]
            for a in ob.attributes:
                pats += [a.subjects, a.abnormal, a.normal, a.uncertain]
        self._multi = _MultiMatcher(pats)

    # ---------------------------------------------------------------- construction
    @staticmethod
    def _compile_obs(name: str, spec: Mapping) -> _ObsRules:
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
        return _ObsRules(name, compile_phrases(spec.get("mentions", [])), compile_phrases(spec.get("exclude", [])),
                         attrs, compile_phrases(rec.get("phrases", [])), rec.get("to", OTHER), int(rec.get("window", 4)))

    @classmethod
    def from_dir(cls, rules_dir: str | Path) -> "Labeler":
        d = Path(rules_dir)
        load = lambda n: json.loads((d / n).read_text(encoding="utf-8"))  # noqa: E731
        return cls(load("observations.json"), load("modifiers.json"), load("no_finding.json"))

    @classmethod
    def default(cls) -> "Labeler":
        """The labeler built from the rule files shipped in ``edgecap/labeler/rules`` (cached)."""
        return _default_labeler()

    # ---------------------------------------------------------------- text handling
    def normalise(self, text: str) -> str:
        """Lower-case, unify whitespace, replace anonymisation tokens (XXXX) by one neutral token."""
        t = (text or "").replace("\u00a0", " ")
        t = _XXXX_RE.sub(self._anon, t)
        t = _SPACE_RE.sub(" ", t).lower()
        return t

    def _segments(self, t: str) -> tuple[list[int], list[tuple[int, int]]]:
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

    # ---------------------------------------------------------------- core
    def _analyse(self, text: str) -> tuple[str, list[Mention], list[tuple[int, int]]]:
        t = self.normalise(text)
        if not t.strip():
            return t, [], []
        clause_starts, sent_spans = self._segments(t)
        # Hard boundaries are sentence ends; clause starts add terminators.
        clause_of = lambda pos: bisect_right(clause_starts, pos) - 1  # noqa: E731

        # word positions (anonymisation tokens do not count towards scope windows)
        word_starts = [m.start() for m in _WORD_RE.finditer(t) if m.group() != self._anon]

        def nwords(a: int, b: int) -> int:
            if b <= a:
                return 0
            return bisect_left(word_starts, b) - bisect_left(word_starts, a)

        scanned = self._multi.scan(t)

        def spans(rx: Optional[re.Pattern]) -> list[tuple[int, int]]:
            if rx is None:
                return []
            got = scanned.get(id(rx))
            return got if got is not None else _spans(rx, t)

        # triggers: longest wins where triggers overlap (pseudo first on equal length)
        cands: list[Trigger] = []
        order = {"pseudo": 0, "uncertain_pre": 1, "uncertain_post": 2, "negation_pre": 3, "negation_post": 4}
        for kind, rx in self._trigger_rx.items():
            for s, e in spans(rx):
                cands.append(Trigger(kind, s, e, t[s:e]))
        cands.sort(key=lambda tr: (-(tr.end - tr.start), order[tr.kind], tr.start))
        taken: list[tuple[int, int]] = []
        triggers: list[Trigger] = []
        for tr in cands:
            if _overlaps((tr.start, tr.end), taken):
                # a trigger phrase may be both pre and post ("versus"): keep the same span twice
                if any(tr.start == o.start and tr.end == o.end and tr.kind != o.kind and o.kind != "pseudo"
                       for o in triggers):
                    triggers.append(tr)
                continue
            taken.append((tr.start, tr.end))
            triggers.append(tr)
        triggers = [tr for tr in triggers if tr.kind != "pseudo"]

        scope_breaks = [s for s, _ in spans(self._scope_break_rx)]
        comma_breaks = [s for s, _ in spans(self._comma_break_rx)]
        commas = [i for i, ch in enumerate(t) if ch == ","]

        def any_between(points: list[int], a: int, b: int) -> bool:
            i = bisect_left(points, a)
            return i < len(points) and points[i] < b

        # mentions (exclusion and qualifier patterns are only run where they can matter)
        mentions: list[Mention] = []
        excl_cache: dict[str, list[tuple[int, int]]] = {}

        def excl_of(ob: _ObsRules) -> list[tuple[int, int]]:
            if ob.name not in excl_cache:
                excl_cache[ob.name] = spans(ob.exclude)
            return excl_cache[ob.name]

        for ob in self._obs:
            found = spans(ob.mentions)
            if not found:
                continue
            excl = excl_of(ob)
            for s, e in found:
                if excl and _overlaps((s, e), excl):
                    continue
                mentions.append(Mention(ob.name, s, e, t[s:e], clause=clause_of(s)))
        plain_spans = [(m.start, m.end) for m in mentions]
        for ob in self._obs:
            for attr in ob.attributes:
                subjects = spans(attr.subjects)
                if not subjects:
                    continue
                excl = excl_of(ob)
                quals: list[tuple[int, int, str]] = []
                for kind, rx in (("abnormal", attr.abnormal), ("normal", attr.normal), ("uncertain", attr.uncertain)):
                    quals.extend((s, e, kind) for s, e in spans(rx))
                # a qualifier inside a longer qualifier of another kind ("enlarged" in "not enlarged") loses
                quals = [q for q in quals if not any(o[2] != q[2] and o[0] <= q[0] and q[1] <= o[1]
                                                     and (o[1] - o[0]) > (q[1] - q[0]) for o in quals)]
                for s, e in subjects:
                    if _overlaps((s, e), plain_spans) or (excl and _overlaps((s, e), excl)):
                        continue
                    c = clause_of(s)
                    best = None
                    for qs, qe, kind in quals:
                        if clause_of(qs) != c or _overlaps((qs, qe), [(s, e)]):
                            continue
                        if qs >= e:
                            dist = nwords(e, qs)
                        else:  # a qualifier before its subject is adjectival: no comma in between
                            dist = nwords(qe, s)
                            if any_between(commas, qe, s):
                                continue
                        if dist > attr.window:
                            continue
                        if best is None or dist < best[0]:
                            best = (dist, qs, qe, kind)
                    if best is None:
                        continue
                    _, qs, qe, kind = best
                    a, b = min(s, qs), max(e, qe)
                    mtext = t[a:b]
                    if kind == "abnormal":
                        mentions.append(Mention(ob.name, a, b, mtext, clause=c))
                    elif kind == "normal":
                        mentions.append(Mention(ob.name, a, b, mtext, NEGATIVE, t[qs:qe], "normal", c, fixed=True))
                    else:
                        mentions.append(Mention(ob.name, a, b, mtext, UNCERTAIN, t[qs:qe], "uncertain", c, fixed=True))

        # drop mentions that are part of a trigger phrase
        trig_spans = [(tr.start, tr.end) for tr in triggers]
        mentions = [m for m in mentions if not any(ts <= m.start and m.end <= te for ts, te in trig_spans)]

        # reclassifiers: "calcified right upper lobe nodule" is a granuloma, not a Lung Lesion
        reclass: list[tuple[_ObsRules, Mention]] = []
        for ob in self._obs:
            for s_, e_ in spans(ob.reclassify):
                reclass.append((ob, Mention("__reclassify__", s_, e_, t[s_:e_], clause=clause_of(s_))))

        # scope
        trig_by_clause: dict[int, list[Trigger]] = {}
        for tr in triggers:
            trig_by_clause.setdefault(clause_of(tr.start), []).append(tr)

        for m in mentions + [x for _, x in reclass]:
            if m.fixed:
                continue
            neg = unc = None
            neg_d = unc_d = 10**9
            for tr in trig_by_clause.get(m.clause, ()):
                kind = tr.kind
                if kind.endswith("_pre"):
                    if tr.end <= m.start:
                        d = nwords(tr.end, m.start)
                        if d > self._pre_window:
                            continue
                        if kind.startswith("negation") and (any_between(scope_breaks, tr.end, m.start)
                                                            or any_between(comma_breaks, tr.end, m.start)):
                            continue
                    elif m.start <= tr.start and tr.end <= m.end:  # inside a compound ("heart is not enlarged")
                        d = 0
                    else:
                        continue
                else:  # _post
                    if tr.start >= m.end:
                        d = nwords(m.end, tr.start)
                        if d > self._post_window or any_between(commas, m.end, tr.start):
                            continue
                    elif m.start <= tr.start and tr.end <= m.end:
                        d = 0
                    else:
                        continue
                if kind.startswith("negation"):
                    if d < neg_d:
                        neg, neg_d = tr, d
                else:
                    if d < unc_d:
                        unc, unc_d = tr, d
            if neg is not None:
                m.label, m.trigger, m.trigger_kind = NEGATIVE, neg.text, neg.kind
            elif unc is not None:
                m.label, m.trigger, m.trigger_kind = UNCERTAIN, unc.text, unc.kind

        for ob, sup in reclass:
            if sup.label == NEGATIVE:
                continue
            for m in mentions:
                if m.observation != ob.name or m.clause != sup.clause:
                    continue
                gap = nwords(sup.end, m.start) if sup.end <= m.start else nwords(m.end, sup.start)
                if gap <= ob.reclassify_window:
                    m.observation = ob.reclassify_to
                    m.trigger, m.trigger_kind = sup.text, "reclassified"

        # disjunction: "atelectasis or scarring" -> both uncertain unless negated
        if self._disj_word_rx is not None and mentions:
            ms = sorted(mentions, key=lambda x: (x.start, -x.end))
            for i in range(len(ms) - 1):
                a, b = ms[i], ms[i + 1]
                if a.clause != b.clause or b.start < a.end:
                    continue
                between = t[a.end:b.start]
                word = self._disj_word_rx.search(between) if nwords(a.end, b.start) <= 3 else None
                if word is None:
                    continue
                for x in (a, b):
                    if x.label == POSITIVE and not x.fixed:
                        x.label, x.trigger, x.trigger_kind = UNCERTAIN, word.group(), "disjunction"

        mentions.sort(key=lambda x: (x.start, x.observation))
        return t, mentions, sent_spans

    @staticmethod
    def _aggregate(labels: list[int]) -> Optional[int]:
        if not labels:
            return None
        if POSITIVE in labels:
            return POSITIVE
        if UNCERTAIN in labels:
            return UNCERTAIN
        return NEGATIVE

    def _labels_from(self, t: str, mentions: list[Mention]) -> dict[str, Optional[int]]:
        per: dict[str, list[int]] = {}
        for m in mentions:
            per.setdefault(m.observation, []).append(m.label)
        out: dict[str, Optional[int]] = {o: None for o in OBSERVATIONS}
        for o in OBSERVATIONS:
            if o != NO_FINDING:
                out[o] = self._aggregate(per.get(o, []))
        if not any(w != self._anon for w in _WORD_RE.findall(t)):  # empty, or only XXXX tokens
            out[NO_FINDING] = self._nf_empty
            return out
        finding = any(
            lab in (POSITIVE, UNCERTAIN)
            for o, labs in per.items() if o not in self._nf_ignore
            for lab in labs
        )
        out[NO_FINDING] = None if finding else POSITIVE
        return out

    # ---------------------------------------------------------------- public API
    def label(self, text: str) -> dict[str, Optional[int]]:
        """Labels for the 14 observations, in ``OBSERVATIONS`` order: 1, 0, -1 or None (not mentioned)."""
        t, mentions, _ = self._analyse(text)
        return self._labels_from(t, mentions)

    def label_many(self, texts: Iterable[str]) -> list[dict[str, Optional[int]]]:
        return [self.label(x) for x in texts]

    def explain(self, text: str) -> dict[str, dict]:
        """Per observation: the label, and the evidence behind it (matched phrase, trigger, sentence).

        ``"(other finding)"`` lists abnormalities outside the 14 observations that ruled out No Finding.
        """
        t, mentions, sent_spans = self._analyse(text)
        labels = self._labels_from(t, mentions)

        def sentence_of(pos: int) -> str:
            for s, e in sent_spans:
                if s <= pos <= e:
                    return t[s:e].strip()
            return ""

        out: dict[str, dict] = {}
        for o in OBSERVATIONS + (OTHER,):
            ev = [m.as_dict(sentence_of(m.start)) for m in mentions if m.observation == o]
            if o == NO_FINDING:
                blockers = sorted({m.observation for m in mentions
                                   if m.observation not in self._nf_ignore and m.label in (POSITIVE, UNCERTAIN)})
                ev = [{"rule": "positive when no observation except %s is positive or uncertain"
                               % ", ".join(sorted(self._nf_ignore)),
                       "blocked_by": blockers}]
            out[o] = {"label": labels.get(o) if o != OTHER else self._aggregate([m.label for m in mentions
                                                                                  if m.observation == OTHER]),
                      "evidence": ev}
        return out


@lru_cache(maxsize=1)
def _default_labeler() -> Labeler:
    root = resources.files("edgecap.labeler") / "rules"
    load = lambda n: json.loads((root / n).read_text(encoding="utf-8"))  # noqa: E731
    try:
        return Labeler(load("observations.json"), load("modifiers.json"), load("no_finding.json"))
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"labeler rule file missing from the installed package: {e.filename}; the package must ship "
            "edgecap/labeler/rules/*.json and edgecap/labeler/mesh_map.json as package data"
        ) from e


def label_report(text: str) -> dict[str, Optional[int]]:
    """Convenience: ``Labeler.default().label(text)``."""
    return Labeler.default().label(text)
