"""BLEU-1..4, METEOR, ROUGE-L and CIDEr of generated reports, via pycocoevalcap (no TensorFlow).

    scores = nlg_scores(references, hypotheses)            # dicts keyed by study id, or aligned lists
    {"bleu1": ..., "bleu2": ..., "bleu3": ..., "bleu4": ..., "meteor": ..., "rouge_l": ..., "cider": ...,
     "pipeline": "pycocoevalcap+ptb"}

    with NLGScorer() as scorer:                           # several systems, one METEOR JVM
        model = scorer.score(references, model_reports)
        constant = scorer.score(references, [most_common_report] * len(references))

Pipelines (the result's "pipeline" says which; docs/conventions.md: the two are NOT comparable):

* ``tokenize=True`` -> ``"pycocoevalcap+ptb"``: the standard COCO caption pipeline. References and
  hypotheses go through the Stanford PTB tokenizer shipped with pycocoevalcap (lower-cased, punctuation
  tokens such as "." and "," removed), then every scorer sees the tokenized text. Needs Java.
* ``tokenize=False`` -> ``"pycocoevalcap"``: the texts are scored as given, only whitespace-collapsed
  (R2Gen's own scorer works this way: its cleaned reports keep "." as a token, which BLEU counts). Pass
  texts that are already cleaned (``edgecap.runtime.text.clean_report``).

Details that decide the numbers:

* One reference per report. Every scorer gets ALL pairs in one call; BLEU is corpus BLEU (clipped
  counts and brevity penalty summed over the corpus, option "closest"), METEOR is pycocoevalcap's corpus
  METEOR (statistics aggregated over the corpus, not the mean of per-report scores), ROUGE-L is the mean
  of per-report ROUGE-L (beta 1.2), CIDEr is pycocoevalcap's CIDEr (n=4, sigma=6) whose idf comes from the
  references of the scored corpus: it depends on the whole corpus, is 0 for a single-report corpus and for
  a corpus whose references are all identical.
* Empty hypotheses (a model that stopped at once, or a text that is only punctuation and tokenizes to
  nothing) are scored as the empty string: each metric gives that report 0 and nothing crashes (checked
  for pycocoevalcap 1.2: BLEU, METEOR, ROUGE-L and CIDEr all accept ""). No placeholder token is used on
  purpose: METEOR's -norm splits a placeholder like "<empty>" and then matches "empty" in a reference.
  Empty references are an error (a study without findings must not be in the evaluation set).
* "|||" is METEOR's field separator and a newline its record separator: both are removed from every text
  (all scorers see the same text), because either one desynchronises pycocoevalcap's METEOR pipe.

Java-backed parts and the quirks of pycocoevalcap 1.2 handled here:

* METEOR runs ``java -Xmx2G -jar meteor-1.5.jar ... -stdio`` as a long-lived subprocess; starting it
  (loading the paraphrase table) costs several seconds (7-14 s measured), scoring itself is fast. The
  JVM is started when an `NLGScorer` is created, so it loads while the PTB tokenizer and the Python
  scorers run, and is reused by every `NLGScorer.score` call.
* pycocoevalcap's `Meteor` never releases its lock when a call fails (e.g. a desynchronised pipe:
  "could not convert string to float"), so the next call, or its ``__del__`` at garbage collection or
  interpreter exit, blocks forever. Here a failed METEOR call kills the JVM, replaces that lock with a
  free one, and raises `RuntimeError` with the JVM's stderr; the scorer is then closed.
* The JVM is killed, its pipes closed and the process reaped (no zombie) by `NLGScorer.close()`, by the
  ``with`` block, at garbage collection or at interpreter exit (``weakref.finalize``), whichever comes
  first; a forked child never kills its parent's JVM. A watchdog kills a METEOR call that runs past
  `METEOR_TIMEOUT_S` instead of hanging on the pipe.
* Threads: one `NLGScorer` serialises its own `score` calls (one pipe); separate scorers own separate
  JVMs (each may take up to 2 GB of heap).
* PTB tokenizer: pycocoevalcap's `PTBTokenizer.tokenize` writes its temporary file into the installed
  package directory (fails on a read-only site-packages), prints to stderr, ignores the tokenizer's exit
  status and zips the output lines with the ids, so a "\\r" inside a text silently shifts every later
  report onto the wrong id. `ptb_tokenize` runs the same jar with the same command line
  (``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase``) and drops the same punctuation
  tokens (pycocoevalcap's own ``PUNCTUATIONS`` list), but writes to a private temporary directory,
  collapses all whitespace (including "\\r", form feeds and Unicode line separators) first, checks the
  exit status and checks that one line came back per text.

Without Java, METEOR and the PTB tokenizer raise `MetricsUnavailable` (install with
``apt-get install -y default-jre-headless``); ``meteor=False, tokenize=False`` needs no Java.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Union

JAVA_INSTALL_HINT = "apt-get install -y default-jre-headless"
PIPELINE_PTB = "pycocoevalcap+ptb"
PIPELINE_PLAIN = "pycocoevalcap"
METEOR_TIMEOUT_S = 900.0
"""Watchdog for one METEOR call (JVM start included): the JVM is killed and RuntimeError raised after it."""
PTB_TIMEOUT_S = 600.0
METRIC_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")

Texts = Union[Mapping[str, str], Sequence[str]]


class MetricsUnavailable(RuntimeError):
    """A metric cannot run in this environment (no Java runtime for METEOR or the PTB tokenizer)."""


def java_available() -> bool:
    """True when a `java` executable is on PATH (METEOR and the PTB tokenizer need it)."""
    return shutil.which("java") is not None


def _require_java(what: str, flag: str) -> None:
    if not java_available():
        raise MetricsUnavailable(
            f"{what} needs a Java runtime, and no `java` was found on PATH. Install one with "
            f"`{JAVA_INSTALL_HINT}` (Debian/Ubuntu), or pass {flag}=False to skip it."
        )


def _tail(text: str, limit: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _normalise(text: str) -> str:
    """Remove METEOR's field separator and collapse all whitespace (newlines included) to single spaces."""
    return " ".join(text.replace("|||", " ").split())


# --------------------------------------------------------------------------------------------------------
# PTB tokenizer


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """Tokenize like pycocoevalcap's PTBTokenizer (one JVM for all texts); returns one string per text.

    Lower-cased, PTB-split, punctuation tokens removed; "" stays "" (and so may a text of punctuation).
    Raises MetricsUnavailable without Java and RuntimeError if the tokenizer fails or misaligns.
    """
    _require_java("The PTB tokenizer (tokenize=True)", "tokenize")
    from pycocoevalcap.tokenizer import ptbtokenizer as ptb

    jar = os.path.join(os.path.dirname(os.path.abspath(ptb.__file__)), ptb.STANFORD_CORENLP_3_4_1_JAR)
    punctuation = set(ptb.PUNCTUATIONS)
    texts = [_normalise(t) for t in texts]
    todo = [i for i, t in enumerate(texts) if t]
    out = [""] * len(texts)
    if not todo:
        return out
    with tempfile.TemporaryDirectory(prefix="edgecap-ptb-") as tmp:
        path = os.path.join(tmp, "sentences.txt")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(texts[i] for i in todo))
        cmd = ["java", "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", path]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=PTB_TIMEOUT_S, check=False)
        except FileNotFoundError as exc:  # java vanished between the check and the call
            raise MetricsUnavailable(f"`java` could not be run; install it with `{JAVA_INSTALL_HINT}`") from exc
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"PTB tokenizer timed out after {PTB_TIMEOUT_S:.0f} s") from exc
    stderr = proc.stderr.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"PTB tokenizer failed (exit {proc.returncode}): {_tail(stderr)}")
    lines = proc.stdout.decode("utf-8", errors="replace").split("\n")
    if len(lines) == len(todo) + 1 and lines[-1] == "":
        lines.pop()  # a newline after the last line
    if len(lines) != len(todo):
        raise RuntimeError(
            f"PTB tokenizer returned {len(lines)} lines for {len(todo)} texts; refusing to misalign reports. "
            f"stderr: {_tail(stderr)}"
        )
    for i, line in zip(todo, lines):
        out[i] = " ".join(w for w in line.split() if w not in punctuation)
    return out


# --------------------------------------------------------------------------------------------------------
# METEOR JVM


def _reap(proc: subprocess.Popen, owner_pid: int) -> str:
    """Kill the METEOR JVM, close its pipes, wait for it (no zombie); return what it wrote to stderr."""
    if os.getpid() != owner_pid:  # a forked child must not kill its parent's JVM
        return ""
    if proc.poll() is None:
        proc.kill()  # kill first: closing stdin could block if the JVM stopped reading
    err = b""
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except (OSError, ValueError):  # BrokenPipeError flushing a dead JVM's stdin
            pass
    try:
        if proc.stderr is not None:
            err = proc.stderr.read()
            proc.stderr.close()
    except (OSError, ValueError):
        pass
    proc.wait()
    return err.decode("utf-8", errors="replace")


class _MeteorJVM:
    """pycocoevalcap's Meteor with a lifetime: started now, killed and reaped by close()/GC/exit."""

    def __init__(self) -> None:
        from pycocoevalcap.meteor.meteor import Meteor

        try:
            self._meteor = Meteor()  # Popen(["java", "-jar", "-Xmx2G", "meteor-1.5.jar", ...]) returns at once
        except FileNotFoundError as exc:
            raise MetricsUnavailable(f"`java` could not be run; install it with `{JAVA_INSTALL_HINT}`") from exc
        self._proc = self._meteor.meteor_p
        self._finalizer = weakref.finalize(self, _reap, self._proc, os.getpid())
        self.closed = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def score(self, gts: dict, res: dict) -> float:
        if self.closed:
            raise RuntimeError("the METEOR JVM of this scorer is closed")
        done = threading.Event()
        expired = threading.Event()

        def expire() -> None:
            if not done.is_set():
                expired.set()
                self._proc.kill()  # unblocks the readline() below with EOF

        watchdog = threading.Timer(METEOR_TIMEOUT_S, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            score, _ = self._meteor.compute_score(gts, res)
        except (ValueError, OSError) as exc:  # EOF / desynchronised pipe / dead JVM
            done.set()
            stderr = self.close()
            why = f"timed out after {METEOR_TIMEOUT_S:.0f} s" if expired.is_set() else f"failed ({exc})"
            raise RuntimeError(f"METEOR {why}; JVM stderr: {_tail(stderr) or '(empty)'}") from exc
        finally:
            done.set()
            watchdog.cancel()
        return float(score)

    def close(self) -> str:
        """Kill and reap the JVM (idempotent); returns its stderr the first time."""
        self.closed = True
        # Meteor.compute_score leaves its lock held when it raises; Meteor.__del__ acquires it. A fresh lock
        # keeps __del__ (which then finds a reaped process and closed pipes) from blocking forever.
        self._meteor.lock = threading.Lock()
        return self._finalizer() or ""


# --------------------------------------------------------------------------------------------------------
# Scoring


def _pairs(references: Texts, hypotheses: Texts) -> tuple[list, list[str], list[str]]:
    """Aligned (ids, references, hypotheses); dicts are matched by key, lists by position."""
    if isinstance(references, Mapping) != isinstance(hypotheses, Mapping):
        raise TypeError("references and hypotheses must both be dicts (keyed by id) or both be lists")
    if isinstance(references, Mapping):
        if set(references) != set(hypotheses):
            missing = [k for k in references if k not in hypotheses]
            extra = [k for k in hypotheses if k not in references]
            raise ValueError(
                f"references and hypotheses have different ids: {len(missing)} without hypothesis "
                f"(e.g. {missing[:3]}), {len(extra)} without reference (e.g. {extra[:3]})"
            )
        ids = list(references)
        refs = [references[k] for k in ids]
        hyps = [hypotheses[k] for k in ids]
    else:
        if isinstance(references, str) or isinstance(hypotheses, str):
            raise TypeError("pass a list of reports, not a single string")
        refs, hyps = list(references), list(hypotheses)
        if len(refs) != len(hyps):
            raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
        ids = list(range(len(refs)))
    for name, texts in (("reference", refs), ("hypothesis", hyps)):
        for k, t in zip(ids, texts):
            if not isinstance(t, str):
                raise TypeError(f"{name} for id {k!r} is {type(t).__name__}, expected str")
    if not ids:
        raise ValueError("nothing to score: no reference/hypothesis pairs")
    return ids, refs, hyps


class NLGScorer:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr over many systems with one METEOR JVM; use as a context manager."""

    def __init__(self, *, tokenize: bool = True, meteor: bool = True) -> None:
        if tokenize:
            _require_java("The PTB tokenizer (tokenize=True)", "tokenize")
        if meteor:
            _require_java("METEOR", "meteor")
        self.tokenize = tokenize
        self.pipeline = PIPELINE_PTB if tokenize else PIPELINE_PLAIN
        self._lock = threading.Lock()
        self._closed = False
        self._meteor = _MeteorJVM() if meteor else None  # starts loading now, in the background

    @property
    def meteor(self) -> bool:
        return self._meteor is not None

    def __enter__(self) -> NLGScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Kill and reap the METEOR JVM (idempotent); the scorer cannot score afterwards."""
        self._closed = True
        if self._meteor is not None:
            self._meteor.close()

    def score(self, references: Texts, hypotheses: Texts, *, readable: bool = False) -> dict[str, float | str]:
        """Scores of `hypotheses` against `references` (one reference each); see the module docstring.

        readable=False (the default) scores the texts as given: cleaned with the anonymisation mark kept
        (config text.xxxx = "keep"), the R2Gen-comparable figure. readable=True first applies
        runtime.text.readable_tokens to both sides (the text people read: the mark dropped or "[redacted]");
        the pipeline name then ends in "+readable". Never set the two figures side by side unnamed."""
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        ids, refs, hyps = _pairs(references, hypotheses)
        if readable:
            from edgecap.runtime.text import readable_tokens

            refs, hyps = ([" ".join(readable_tokens(t.split())) for t in side] for side in (refs, hyps))
        with self._lock:
            if self._closed or (self._meteor is not None and self._meteor.closed):
                raise RuntimeError("this NLGScorer is closed (a failed METEOR call also closes it)")
            n = len(ids)
            if self.tokenize:
                texts = ptb_tokenize(refs + hyps)  # one JVM for both sides
                refs, hyps = texts[:n], texts[n:]
            else:
                refs, hyps = [_normalise(t) for t in refs], [_normalise(t) for t in hyps]
            empty = [k for k, r in zip(ids, refs) if not r]
            if empty:
                raise ValueError(
                    f"{len(empty)} empty reference(s) after {'tokenization' if self.tokenize else 'normalisation'} "
                    f"(e.g. ids {empty[:5]}); drop studies without findings before scoring"
                )
            gts = {i: [r] for i, r in enumerate(refs)}
            res = {i: [h] for i, h in enumerate(hyps)}
            bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
            rouge, _ = Rouge().compute_score(gts, res)
            cider, _ = Cider().compute_score(gts, res)
            out: dict[str, float | str] = {f"bleu{k + 1}": float(b) for k, b in enumerate(bleu)}
            if self._meteor is not None:
                out["meteor"] = self._meteor.score(gts, res)
            out["rouge_l"] = float(rouge)
            out["cider"] = float(cider)
            out["pipeline"] = self.pipeline + ("+readable" if readable else "")
            return out


def nlg_scores(
    references: Texts, hypotheses: Texts, *, tokenize: bool = True, meteor: bool = True, readable: bool = False
) -> dict[str, float | str]:
    """One-shot scores: keys bleu1..bleu4, meteor (only when meteor=True), rouge_l, cider, pipeline.

    `references` and `hypotheses`: dicts with the same keys (study id -> report) or equally long lists.
    tokenize=True: PTB tokenizer, pipeline "pycocoevalcap+ptb"; False: texts as given, "pycocoevalcap".
    Raises MetricsUnavailable when Java is needed (tokenize or meteor) and missing. To score several
    systems, use `NLGScorer` (one METEOR JVM start instead of one per call).
    """
    with NLGScorer(tokenize=tokenize, meteor=meteor) as scorer:
        return scorer.score(references, hypotheses, readable=readable)
